"""Image grids for viewing: images side by side in one array, enlarged by pixel repetition (what the grid
PNGs of `meddiff sample` for a VDM and `meddiff evaluate --generated` show)."""

from __future__ import annotations

import math

import numpy as np


def image_grid(images: np.ndarray, ncol: int | None = None, pad: int = 2, fill: float = 0.0) -> np.ndarray:
    """[N, H, W] -> one [rows*(H+pad)+pad, ncol*(W+pad)+pad] image, row-major, `fill` between tiles."""
    n, h, w = images.shape
    ncol = ncol or math.ceil(math.sqrt(n))
    rows = math.ceil(n / ncol)
    out = np.full((rows * (h + pad) + pad, ncol * (w + pad) + pad), fill, dtype=images.dtype)
    for i in range(n):
        r, c = divmod(i, ncol)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = images[i]
    return out


VIEW_WIDTH = 512  # grids for viewing are enlarged to at least this many pixels wide


def upscale_nearest(img: np.ndarray, min_width: int = VIEW_WIDTH) -> np.ndarray:
    """[H, W] enlarged by the smallest integer factor that makes it >= min_width wide, each pixel
    repeated (nearest neighbour: no interpolation, every level unchanged)."""
    k = max(1, math.ceil(min_width / img.shape[1]))
    return np.repeat(np.repeat(img, k, axis=0), k, axis=1)


def grid_for_viewing(images: np.ndarray, fill: float = -1.0) -> np.ndarray:
    """image_grid of [N, H, W] enlarged with upscale_nearest (what grid PNGs show)."""
    return upscale_nearest(image_grid(images, fill=fill))


__all__ = ["VIEW_WIDTH", "grid_for_viewing", "image_grid", "upscale_nearest"]
