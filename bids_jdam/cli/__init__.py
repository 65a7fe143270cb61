"""cli stage of bids-jdam."""
