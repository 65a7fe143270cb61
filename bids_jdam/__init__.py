"""bids-jdam: synthetic FDG-PET from T1-weighted MRI with a joint diffusion attention model."""

__version__ = "0.2.0"
