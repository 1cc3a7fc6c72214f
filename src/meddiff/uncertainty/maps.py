"""`meddiff sample --interval P`: the lower / upper maps of one restored input (restore.files calls this).

Per slice, the model's stored calibration (calibrate.py, one per sampler and sample count) turns
the restored image, its condition and measurement (and the sample std, with --samples N > 1) into
an error scale and, through the conformal table of level P, into [restored - h, restored + h].
No network call: the maps cost a few filters per slice.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from .calibrate import IntervalCalibration, calibration_for


def calibration_for_request(model_file: str | Path, sampler: str, samples: int, level: float) -> IntervalCalibration:
    """The calibration `--interval level` needs for this sampler ("name steps") and sample count;
    an InputError naming what the model has otherwise (checked before any sampling)."""
    if not 0 < level < 1:
        raise InputError(f"--interval {level:g}: expected a coverage level in (0, 1), e.g. 0.9")
    cal = calibration_for(model_file, sampler, samples)
    cal.table(level)
    return cal


def interval_maps(cal: IntervalCalibration | None, level: float, out: torch.Tensor, cond: torch.Tensor,
                  lowres: torch.Tensor | None) -> dict[str, tuple[torch.Tensor, str]]:
    """{"lower": (map, sentence), "upper": (map, sentence)}: maps [N, 1, H, W] in the normalised
    [-1, 1] units of out [S, N, 1, H, W] (S samples, averaged; the std of S > 1 is a feature) around
    their mean; cond [N, C, H, W] the model condition (channel 0: the upsampled measurement);
    lowres [N, 1, h, w] the measurement, or None. cal None (the restorer has no calibration): an InputError."""
    if cal is None:
        raise InputError(f"--interval {level:g}: needs a super-resolution DDPM checkpoint with a stored interval calibration")
    if cond.shape[0] != out.shape[1] or tuple(cond.shape[-2:]) != tuple(out.shape[-2:]):
        raise InputError(f"--interval: condition {tuple(cond.shape)} does not match the output {tuple(out.shape[1:])}; "
                         "intervals need in-plane super-resolution slices")
    mean = out.double().mean(0)
    std = out.double().std(0, unbiased=True) if out.shape[0] > 1 else None
    lower, upper = torch.empty_like(mean, dtype=torch.float32), torch.empty_like(mean, dtype=torch.float32)
    for n in range(mean.shape[0]):
        lr = None if lowres is None or lowres.shape[0] != mean.shape[0] else lowres[n, 0].double().numpy()
        lo, hi, _ = cal.interval(level, mean[n, 0].numpy(), cond[n, 0].double().numpy(), lr,
                                 None if std is None else std[n, 0].numpy())
        lower[n, 0], upper[n, 0] = torch.from_numpy(lo.astype(np.float32)), torch.from_numpy(hi.astype(np.float32))
    return {tag: (m, f"{tag} end of {cal.sentence(level)}") for tag, m in (("lower", lower), ("upper", upper))}
