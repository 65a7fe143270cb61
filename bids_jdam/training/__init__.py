"""training stage of bids-jdam: one loop (``fit``) for every method, checkpoints, EMA and multi-process training."""
