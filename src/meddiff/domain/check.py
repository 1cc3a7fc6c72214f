"""The domain check of a restore run (meddiff.domain): each input is checked before sampling (modality,
the card's fitted signals on the delivered image) and its restoration after (consistency with the
measurement). Nothing is printed while the progress bar runs: `domain_summary` gives, after it,
one warning per flagged input and the line saying on which inputs the check scores the result
worse than bicubic. --strict-domain refuses a flagged input before sampling (InputError) and makes
a run whose results the check scores worse than bicubic exit non-zero (`domain_exit_status`)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..errors import InputError
from ..io import Volume

log = logging.getLogger(__name__)

#: exit status of `meddiff sample --strict-domain` when the check scores a written result worse than bicubic
EXIT_WORSE_THAN_BICUBIC = 3


def domain_precheck(args, domain, name: Path, vol: Volume, slices: torch.Tensor, is_lowres: bool):
    """meddiff.domain.check_input on one input before sampling; with --strict-domain a flagged input is
    refused here (InputError), before any sampling."""
    from ..data.slices import in_plane_spacing
    from .card import check_input

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
    if report.reasons and args.strict_domain:
        raise InputError(_message(report) + " (--strict-domain: refused before sampling; drop the flag to restore it "
                         "and get this as a warning)")
    if report.reasons or report.notes:
        log.debug("%s", _message(report))
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
    """The consistency of the restored mean with the measurement (meddiff.domain.check_output); no
    printing here (domain_summary reports it after the progress bar)."""
    from .card import check_output

    if lowres is None:
        return
    if check_output(report, out, lowres, domain[2], domain[1]):
        log.debug("%s", _message(report))


def _message(report) -> str:
    text = f"{report.source}: " + "; ".join(report.reasons or report.notes)
    if report.reasons:
        text = f"{report.source} looks unlike what the model handles: " + "; ".join(report.reasons)
        if report.notes:
            text += " (also: " + "; ".join(report.notes) + ")"
    return text


def domain_summary(reports: list) -> str:
    """The run's domain findings, printed once after the progress bar: one warning line per flagged
    input, then which results the check scores worse than bicubic ("" when nothing was flagged)."""
    lines = [f"warning: {_message(r)}" for r in reports if r.reasons]
    worse = [r.source for r in reports if r.worse_than_bicubic]
    if worse:
        lines.append(f"domain check: the result of {len(worse)} of {len(reports)} input(s) is scored worse than bicubic "
                     f"interpolation ({', '.join(Path(w).name for w in worse[:5])}{', ...' if len(worse) > 5 else ''}); "
                     "compare with --method bicubic before using it")
    return "\n".join(lines)


def domain_exit_status(strict: bool, reports: list) -> int:
    """0, or EXIT_WORSE_THAN_BICUBIC with --strict-domain when the check scored a result worse than bicubic."""
    return EXIT_WORSE_THAN_BICUBIC if strict and any(r.worse_than_bicubic for r in reports) else 0
