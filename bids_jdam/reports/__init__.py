"""reports stage of bids-jdam."""
