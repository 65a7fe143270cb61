"""models stage of bids-jdam."""
