"""diffusion stage of bids-jdam."""
