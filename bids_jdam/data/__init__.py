"""data stage of bids-jdam."""
