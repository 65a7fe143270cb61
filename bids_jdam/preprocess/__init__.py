"""preprocess stage of bids-jdam."""
