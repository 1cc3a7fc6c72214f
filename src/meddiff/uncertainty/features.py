"""A heuristic error scale from what is available at inference, for one-call restorations too.

Super-resolution errors sit where the restored image has detail the measurement could not carry:
at edges (the local gradient magnitude of the restored image), where the model changed the
condition (|restored - condition|), and, with several samples, where samples disagree (their std).
The scale is their root sum of squares plus a floor; conformal.py calibrates it.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def error_scale(restored: np.ndarray, condition: np.ndarray, std: np.ndarray | None = None, *,
                smooth: float = 1.5, floor: float = 1e-3) -> np.ndarray:
    """u [H, W] > 0 from restored and condition [H, W] in [-1, 1] (and the sample std, if any):
    sqrt(G_s(|grad restored|)^2 + G_s(|restored - condition|)^2 + std^2) + floor, G_s a Gaussian of
    `smooth` pixels (scipy.ndimage)."""
    r = np.asarray(restored, np.float64)
    grad = ndimage.gaussian_filter(np.hypot(ndimage.sobel(r, 0), ndimage.sobel(r, 1)) / 8.0, smooth)
    change = ndimage.gaussian_filter(np.abs(r - np.asarray(condition, np.float64)), smooth)
    total = grad**2 + change**2 + (0.0 if std is None else np.asarray(std, np.float64) ** 2)
    return np.sqrt(total) + floor
