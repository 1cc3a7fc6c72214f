"""The domain check of a restore run (meddiff.domain): each input is checked before sampling (modality,
spacing, intensities, the model-based score) and its restoration after (consistency with the
measurement); `meddiff sample` warns naming the file, or refuses it with --strict-domain."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import torch

from ..errors import InputError
from ..io import Volume

log = logging.getLogger(__name__)


def domain_precheck(args, domain, name: Path, vol: Volume, slices: torch.Tensor, is_lowres: bool):
    """meddiff.domain.check_input on one input before sampling: warn, or refuse with --strict-domain."""
    from ..data.slices import in_plane_spacing
    from ..domain import check_input

    denoiser, card, factor = domain[:3]
    spacing = None
    src = str(vol.source).lower()
    known = vol.meta.get("modality") or src.endswith((".nii", ".nii.gz"))  # PNG/TIFF/NPY carry no real spacing
    if known and len(vol.spacing) >= 2:
        spacing = in_plane_spacing(vol.spacing, args.axis) if vol.ndim == 3 else vol.spacing
        spacing = tuple(float(s) * (1.0 if is_lowres else factor) for s in spacing)  # as the low-resolution input's
    small = min(slices.shape[-2:]) < 32
    report = check_input(str(name), slices if is_lowres or factor == 1 else _lowres_of(slices, factor), vol.meta.get("modality"),
                         spacing, factor, denoiser, card, score=not small and denoiser is not None)
    _complain(args, report, before=True)
    return report


def calibrated_error_scale(domain, samples: int) -> float:
    """std -> expected |mean - truth| factor from the model card (0 = the model has no calibration)."""
    from ..metrics.calibration import error_std_factor

    card = None if domain is None else domain[1]
    if card is None or not card.std_scale:
        return 0.0
    if card.std_sampler and len(domain) > 3 and domain[3] != card.std_sampler:
        log.info("no calibrated uncertainty: the model's std scale was fitted for %s, not %s", card.std_sampler, domain[3])
        return 0.0
    return float(card.std_scale * error_std_factor(samples))


def _lowres_of(x: torch.Tensor, factor: float) -> torch.Tensor:
    from ..data.degrade import SuperResolution

    return SuperResolution(factor).downsample(x)


def domain_postcheck(args, domain, report, out: torch.Tensor, lowres: torch.Tensor | None) -> None:
    """The consistency ratio of the restored mean with the measurement (meddiff.domain)."""
    from ..domain import SCORE_LIMIT, consistency_ratio

    if lowres is None:
        return
    report.consistency = consistency_ratio(out.mean(0), lowres, domain[2])
    if report.consistency > SCORE_LIMIT:
        report.reasons.append(f"the output agrees with the measured image less than bicubic does (consistency ratio "
                              f"{report.consistency:.2f} > {SCORE_LIMIT:g}): the model changed what was measured")
        _complain(args, report, before=False)


def _complain(args, report, before: bool) -> None:
    if report.in_domain:
        return
    msg = f"{report.source} looks unlike the model's training data: " + "; ".join(report.reasons)
    if args.strict_domain:
        raise InputError(msg + " (--strict-domain: refused; drop the flag to restore it with this warning)")
    log.warning("%s", msg)
    if before:
        print(f"meddiff sample: warning: {msg}", file=sys.stderr)
