"""bids-jdam: synthetic FDG-PET from T1-weighted MRI with a joint diffusion attention model."""

__version__ = "0.1.0.dev0"
