"""Metrics of restored volumes in every plane, and the through-plane (slice-to-slice) error.

Volumes are arrays ``[D0, D1, D2]``; "plane k" is the set of 2D images obtained by fixing the
index along axis k (plane 0 = the slices, planes 1 and 2 = the two reformats).

Through-plane error along axis k (how well the change from one slice to the next matches the truth's):

    e_k(pred) = RMS( diff_k(pred) - diff_k(truth) ),   diff_k(v)[i] = v[i + 1] - v[i] along axis k

Reported relative to a reference (bicubic): e_k(pred) / e_k(reference); below 1 = more coherent.
"""

from __future__ import annotations

import numpy as np
import torch

from .image import psnr, ssim


def planes(volume: np.ndarray, axis: int) -> torch.Tensor:
    """The 2D images of `volume` [D0, D1, D2] with the index along `axis` fixed: [N, 1, h, w] float64."""
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(np.asarray(volume, np.float64), axis, 0)))[:, None]


def plane_metrics(pred: np.ndarray, truth: np.ndarray, axis: int, data_range: float) -> tuple[float, float]:
    """(mean PSNR, mean SSIM) over the planes of `pred` against `truth` along `axis`, leaving out
    planes where the truth is constant (empty background at the volume's edge: PSNR would be inf)."""
    p, t = planes(pred, axis), planes(truth, axis)
    keep = t.flatten(1).std(1) > 0
    if not keep.any():
        raise ValueError(f"every plane along axis {axis} of the truth is constant")
    p, t = p[keep], t[keep]
    return float(np.mean(psnr(p, t, data_range))), float(np.mean(ssim(p, t, data_range)))


def through_plane_error(pred: np.ndarray, truth: np.ndarray, axis: int) -> float:
    """RMS of diff(pred) - diff(truth) along `axis` (same units as the volumes)."""
    d = np.diff(np.asarray(pred, np.float64), axis=axis) - np.diff(np.asarray(truth, np.float64), axis=axis)
    return float(np.sqrt(np.mean(d**2)))
