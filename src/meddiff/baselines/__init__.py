"""Non-learned and learned baselines evaluated on the same data and with the same metrics as meddiff.

- :mod:`meddiff.baselines.interpolation`: bicubic / bilinear / nearest upsampling of a low-resolution image.
"""

from .interpolation import METHODS, interpolate_baseline

__all__ = ["METHODS", "interpolate_baseline"]
