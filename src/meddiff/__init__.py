"""meddiff: diffusion models for medical image restoration (Med-cDiff) and generation (Medical VDM)."""

__version__ = "0.1.0"
