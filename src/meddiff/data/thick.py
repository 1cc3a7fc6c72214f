"""Through-plane degradation of volumes: thick slices, and interpolation back along one axis.

A thick-slice acquisition (e.g. 1 x 1 x 4 mm) is modelled as the average of `factor`
neighbouring thin slices (a box slice profile), decimated by `factor`:

    lowres[k] = (1 / factor) * sum_{i = 0}^{factor - 1} x[factor k + i]        along `axis`

and restored along that axis by 1D linear or cubic interpolation (torch's ``align_corners=False``
convention, so thick slice k sits at the centre of its thin slices, factor k + (factor - 1) / 2).
Shapes: any array whose `axis` length is a multiple of `factor`; tensors keep their dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError

MODES = {"linear": "bilinear", "cubic": "bicubic"}


def thick_slices(x: Tensor, factor: int, axis: int) -> Tensor:
    """Average groups of `factor` neighbouring slices along `axis`: length n -> n / factor."""
    n = x.shape[axis]
    if factor < 1 or n % factor:
        raise InputError(f"thick slices: {n} slices along axis {axis} is not a multiple of the factor {factor}")
    moved = x.movedim(axis, -1)
    out = moved.reshape(*moved.shape[:-1], n // factor, factor).mean(-1)
    return out.movedim(-1, axis)


def upsample_axis(x: Tensor, size: int, axis: int, mode: str = "cubic") -> Tensor:
    """Interpolate along `axis` only, to `size` samples (linear or cubic; other axes untouched)."""
    if mode not in MODES:
        raise InputError(f"interpolation {mode!r} along an axis: expected one of {sorted(MODES)}")
    moved = x.movedim(axis, -1)
    flat = moved.reshape(-1, 1, 1, moved.shape[-1])
    up = F.interpolate(flat.double(), size=(1, size), mode=MODES[mode], align_corners=False).to(x.dtype)
    return up.reshape(*moved.shape[:-1], size).movedim(-1, axis)


def thick_slice_condition(x: Tensor, factor: int, axis: int, mode: str = "cubic") -> Tensor:
    """The through-plane SR condition: thick slices of x interpolated back to x's shape along `axis`."""
    return upsample_axis(thick_slices(x, factor, axis), x.shape[axis], axis, mode)
