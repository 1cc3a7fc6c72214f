"""From a normalised volume to square model-sized 2D slices, and back.

Geometry of one prepared slice (recorded in manifest.csv so outputs can be mapped back):

    original slice [h, w]  --pad (background -1) to [s, s], s = max(h, w)-->
    [s, s]  --anti-aliased resize-->  [size, size]

`SliceGeometry.restore` undoes both steps (resize back to [s, s], crop the padding).
Slices are not resampled to isotropic pixels: the in-plane spacing is recorded instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError

FOREGROUND_LEVEL = 0.05  # a pixel is foreground if above lo + 5% of the patient's window


@dataclass(frozen=True)
class SliceGeometry:
    """How a prepared [size, size] slice relates to its original [height, width] pixels.

    pad_top/pad_bottom/pad_left/pad_right: background rows/columns added to make it square.
    size: the prepared side length; scale = size / (padded side) (prepared px per original px).
    """

    height: int
    width: int
    pad_top: int
    pad_bottom: int
    pad_left: int
    pad_right: int
    size: int

    @property
    def padded(self) -> int:
        return self.height + self.pad_top + self.pad_bottom

    @property
    def scale(self) -> float:
        return self.size / self.padded

    def restore(self, prepared: np.ndarray | torch.Tensor) -> np.ndarray:
        """[..., size, size] prepared pixels -> [..., height, width] (bicubic back, crop padding)."""
        t = torch.as_tensor(np.asarray(prepared, dtype=np.float32))
        lead = t.shape[:-2]
        t = t.reshape(-1, 1, *t.shape[-2:])
        t = F.interpolate(t, size=(self.padded, self.padded), mode="bicubic", align_corners=False, antialias=True)
        t = t[..., self.pad_top : self.pad_top + self.height, self.pad_left : self.pad_left + self.width]
        return t.reshape(*lead, self.height, self.width).numpy()


def iter_slices(array: np.ndarray, axes: tuple[int, ...]) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield (axis, index, slice [h, w]) of a [Z, Y, X] array along each of `axes`.

    A 2D [Y, X] array yields itself once with axis -1, index 0.
    """
    if array.ndim == 2:
        yield -1, 0, array
        return
    for axis in axes:
        for i in range(array.shape[axis]):
            yield axis, i, np.take(array, i, axis=axis)


def in_plane_spacing(spacing: tuple[float, ...], axis: int) -> tuple[float, float]:
    """(row, column) pixel spacing in mm of a slice taken along `axis` (-1 for a 2D image)."""
    if axis == -1:
        return float(spacing[0]), float(spacing[1])
    rest = [s for a, s in enumerate(spacing) if a != axis]
    return float(rest[0]), float(rest[1])


def foreground_fraction(normalised: np.ndarray) -> float:
    """Fraction of pixels above the background level (-1 + 2 * FOREGROUND_LEVEL in [-1, 1])."""
    return float(np.mean(normalised > -1.0 + 2.0 * FOREGROUND_LEVEL))


def pad_to_square(img: np.ndarray, value: float = -1.0) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Centre `img` [h, w] in a square [s, s], s = max(h, w), filled with `value`.

    Returns (padded, (top, bottom, left, right)).
    """
    h, w = img.shape
    s = max(h, w)
    top, left = (s - h) // 2, (s - w) // 2
    pads = (top, s - h - top, left, s - w - left)
    out = np.full((s, s), value, dtype=np.float32)
    out[top : top + h, left : left + w] = img
    return out, pads


def resize(img: np.ndarray, size: int) -> np.ndarray:
    """[s, s] -> [size, size] with anti-aliased bicubic (torch), clamped to [-1, 1]."""
    if img.shape == (size, size):
        return img.astype(np.float32, copy=False)
    t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None, None]
    t = F.interpolate(t, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    return t[0, 0].clamp(-1.0, 1.0).numpy()


def to_model_slice(normalised: np.ndarray, size: int) -> tuple[np.ndarray, SliceGeometry]:
    """Normalised slice [h, w] in [-1, 1] -> ([size, size] float32, its SliceGeometry)."""
    padded, (t, b, l, r) = pad_to_square(normalised, -1.0)
    geom = SliceGeometry(normalised.shape[0], normalised.shape[1], t, b, l, r, size)
    return resize(padded, size), geom


def to_slices(array: np.ndarray, axis: int) -> np.ndarray:
    """[Y,X] -> [1,Y,X]; [Z,Y,X] -> slices along `axis` as [N, H, W]."""
    if array.ndim == 2:
        return array[None]
    if axis not in (0, 1, 2):
        raise InputError(f"--axis {axis}: expected 0, 1 or 2 for a 3D volume")
    return np.moveaxis(array, axis, 0)


def from_slices(slices: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    """Inverse of to_slices: [N, H, W] back to the [Y,X] or [Z,Y,X] layout of the volume."""
    return slices[0] if ndim == 2 else np.moveaxis(slices, 0, axis)
