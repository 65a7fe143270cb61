"""evaluate stage of bids-jdam."""
