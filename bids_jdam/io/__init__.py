"""Every write: atomic files, the gate that refuses the input dataset, locks and checkpoints."""
