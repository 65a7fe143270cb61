"""synthesis stage of bids-jdam."""
