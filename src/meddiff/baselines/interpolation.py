"""Interpolation baselines for super-resolution: upsample the low-resolution image to the target grid.

The low-resolution image comes from the task's degradation
(``meddiff.data.degrade.SuperResolution(factor, upsample).downsample(x0)``); this module
only upsamples it, as Med-cDiff's "bilinear interpolation" baseline and the usual bicubic one.
"""

from __future__ import annotations

from typing import Union

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError

ArrayLike = Union[np.ndarray, torch.Tensor]

# method name -> torch.nn.functional.interpolate mode
METHODS = {"bicubic": "bicubic", "bilinear": "bilinear", "nearest": "nearest-exact"}


def interpolate_baseline(
    lr: ArrayLike,
    size: tuple[int, int],
    method: str = "bicubic",
    value_range: tuple[float, float] | None = (-1.0, 1.0),
) -> ArrayLike:
    """Upsample ``lr`` to ``size`` = (H, W) by ``method`` in {"bicubic", "bilinear", "nearest"}.

    lr:          ``[h, w]`` or ``[B, C, h, w]``, numpy or torch, any intensity units.
    size:        target (H, W) in pixels (the ground-truth grid).
    value_range: (lo, hi) to clamp the result to (bicubic overshoots at edges); ``(-1, 1)``
                 for normalised images, ``None`` for no clamping.
    Returns the same kind (numpy/torch) and rank as ``lr``; numpy results are float32,
    torch results keep ``lr``'s floating dtype. Uses ``F.interpolate(align_corners=False)``:
    pixel centres, not corners, are aligned, as image resampling does.
    """
    if method not in METHODS:
        raise InputError(f"unknown interpolation method {method!r}; expected one of {sorted(METHODS)}")
    is_numpy = not isinstance(lr, torch.Tensor)
    x = torch.from_numpy(np.asarray(lr, dtype=np.float32)) if is_numpy else lr
    if not x.is_floating_point():
        x = x.to(torch.float32)
    squeeze = x.ndim == 2
    if squeeze:
        x = x[None, None]
    if x.ndim != 4:
        raise InputError(f"low-resolution image must be [h, w] or [B, C, h, w], got shape {tuple(x.shape)}")
    size = (int(size[0]), int(size[1]))
    mode = METHODS[method]
    kwargs = {} if mode == "nearest-exact" else {"align_corners": False}
    y = F.interpolate(x, size=size, mode=mode, **kwargs)
    if value_range is not None:
        y = y.clamp(float(value_range[0]), float(value_range[1]))
    if squeeze:
        y = y[0, 0]
    return y.numpy() if is_numpy else y
