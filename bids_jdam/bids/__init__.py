"""bids stage of bids-jdam."""
