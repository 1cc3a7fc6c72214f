"""What a restoration model was trained on, and whether an input looks like it (issue 13, item 4).

A super-resolution model trained on one kind of image paints that kind's texture onto whatever
it is given. Before restoring, `meddiff sample` checks each input and warns (``--strict-domain``:
refuses), naming the file and the reason:

1. **Modality**: the DICOM Modality against the modalities of the training data.
2. **Pixel spacing**: the output's in-plane spacing against the training data's range.
3. **Intensity histogram**: the distribution of the normalised input's foreground values against
   the training data's, as the 1-Wasserstein distance between quantile functions.
4. **Model-based score** (needs no truth and no card): at the input's *own* scale, degrade the
   input y by the model's factor again, y' = up(down(y)), and ask the model for its one-step
   estimate of y from (y', noise at a mid level), as sampling starts. The score is the ratio of
   that estimate's mean squared error to bicubic's, E|x0_hat - y|^2 / E|y' - y|^2: below 1 the
   model improves on bicubic on this image's own content; above 1 it makes it worse, the
   signature of an input unlike its training data (e.g. CT for an MR model).

The card is stored as JSON in the model file's metadata (key ``domain``) by
``scripts/domain_card.py``; models without one get checks 1-3 skipped and say so.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .data.degrade import SuperResolution

Tensor = torch.Tensor
QUANTILES = tuple(np.round(np.linspace(0.05, 0.95, 19), 2).tolist())
SCORE_LIMIT = 1.0  # the model-based score above which an input is out of the model's depth
HISTOGRAM_LIMIT = 0.25  # 1-Wasserstein distance in [-1, 1] units above which intensities look foreign
SPACING_SLACK = 2.0  # output spacing may differ from the training range by this factor


@dataclass(frozen=True)
class DomainCard:
    """What a model was trained on (every field is informative; empty = unknown)."""

    modalities: tuple[str, ...] = ()
    anatomy: str = ""
    contrasts: tuple[str, ...] = ()
    training_data: str = ""
    degradation: str = ""
    spacing_mm: tuple[float, float] = (0.0, 0.0)  # in-plane spacing range of the training images (0 = unknown)
    intensity_quantiles: tuple[float, ...] = ()  # QUANTILES of the foreground of the normalised training images
    score_reference: tuple[float, float] = (math.nan, math.nan)  # median and 95th percentile of the score on training images
    licence: str = ""
    std_scale: float = 0.0  # calibration of --samples N: expected |mean - truth| = std_scale * sqrt(1 + 1/N) * std (0 = none)
    std_sampler: str = ""  # the sampler (and steps) std_scale was fitted with, e.g. "dpm_solver_pp 10"; it applies to it only
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "DomainCard":
        d = json.loads(text)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in known})


def read_card(model_file: str | Path) -> DomainCard | None:
    """The card in a model file's metadata, or None."""
    from safetensors import safe_open

    with safe_open(str(model_file), framework="pt") as f:
        meta = f.metadata() or {}
    return DomainCard.from_json(meta["domain"]) if "domain" in meta else None


def foreground_quantiles(images: np.ndarray) -> tuple[float, ...]:
    """QUANTILES of the values of [N, H, W] images in [-1, 1] above the background (> -0.95)."""
    v = np.asarray(images, np.float32).ravel()
    v = v[v > -0.95]
    if v.size == 0:
        return tuple(-1.0 for _ in QUANTILES)
    return tuple(float(q) for q in np.quantile(v, QUANTILES))


def histogram_distance(a: Sequence[float], b: Sequence[float]) -> float:
    """1-Wasserstein distance between two distributions given by the same quantiles (mean |Q_a - Q_b|)."""
    return float(np.mean(np.abs(np.asarray(a) - np.asarray(b))))


SCORE_BATCH = 8  # images per network call of model_score (memory stays that of sampling one batch)


@torch.no_grad()
def model_score(denoiser, images: Tensor, factor: float, *, t_fraction: float = 0.5, seed: int = 0) -> np.ndarray:
    """Per-image score (see the module docstring, 4) of images [N, 1, H, W] in [-1, 1] -> [N].

    The model's one-step x0 estimate at timestep round(t_fraction * T) from y' = up(down(y)),
    relative to y' itself (bicubic). Image i's noise comes from its own generator
    (inference.image_seed(seed, i, 0)), so the score does not depend on how images are batched.
    """
    from .inference import image_seed, pad_planes
    from .samplers.noise import generators_for, randn_per_image

    sr = SuperResolution(factor)
    y = images.float()
    cond = sr.upsample(sr.downsample(y), tuple(y.shape[-2:]))
    y_p, _ = pad_planes(y, denoiser.size_multiple)  # padded like inference.restore; the original pixels are scored
    cond_p, (h, w) = pad_planes(cond, denoiser.size_multiple)
    sched = denoiser.sched
    k = int(round(t_fraction * (sched.timesteps - 1)))
    ab = float(sched.alpha_bar[k])
    device = next(denoiser.net.parameters()).device
    est = torch.empty_like(y)
    for i in range(0, len(y), SCORE_BATCH):
        yb, cb = y_p[i : i + SCORE_BATCH], cond_p[i : i + SCORE_BATCH]
        gens = generators_for([image_seed(seed, j, 0) for j in range(i, i + len(yb))])
        x_t = math.sqrt(ab) * denoiser.to_diffused(yb, cb) + math.sqrt(1 - ab) * randn_per_image(yb.shape, gens, torch.device("cpu"))
        kb = torch.full((len(yb),), k, dtype=torch.long, device=device)
        x0_hat = denoiser(x_t.to(device), kb, cb.to(device))
        est[i : i + SCORE_BATCH] = denoiser.from_diffused(x0_hat.cpu(), cb).clamp(-1, 1)[..., :h, :w]
    err_model = ((est - y) ** 2).mean(dim=(1, 2, 3))
    err_bicubic = ((cond - y) ** 2).mean(dim=(1, 2, 3)).clamp_min(1e-8)
    return (err_model / err_bicubic).numpy()


@torch.no_grad()
def consistency_ratio(restored: Tensor, lowres: Tensor, factor: float) -> float:
    """How far a restoration strays from its measurement, relative to bicubic's own round trip:
    RMS(down(x_hat) - y) / RMS(down(up(y)) - y) for restored [N, 1, H, W] and measurement y
    [N, 1, h, w]. Below 1 the output agrees with what was measured better than bicubic does;
    above 1 it has changed what the scanner saw (contrast shifts, invented structure)."""
    sr = SuperResolution(factor)
    y = lowres.float()
    own = sr.downsample(restored.float()) - y
    ref = sr.downsample(sr.upsample(y, tuple(restored.shape[-2:]))) - y
    return float(own.pow(2).mean().sqrt() / ref.pow(2).mean().sqrt().clamp_min(1e-8))


@dataclass
class DomainReport:
    """The findings for one input: reasons it looks out of domain (empty = none) and the numbers."""

    source: str
    reasons: list[str]
    score: float | None  # None: the input was too small to score
    histogram_distance: float | None = None
    consistency: float | None = None  # set after sampling (consistency_ratio)

    @property
    def in_domain(self) -> bool:
        return not self.reasons


def check_input(source: str, slices: Tensor, modality: str | None, spacing: Sequence[float] | None, factor: float,
                denoiser, card: DomainCard | None, *, score: bool = True) -> DomainReport:
    """Check one input (its normalised low-resolution slices [N, 1, h, w]; DICOM modality or None;
    in-plane spacing of the low-resolution input or None) against `card`. score=False skips the
    model-based score (inputs under ~32 pixels give no meaningful one)."""
    reasons: list[str] = []
    value = float(np.median(model_score(denoiser, slices, factor))) if score else None
    if value is not None and value > SCORE_LIMIT:
        reasons.append(f"at its own scale the model's estimate is worse than bicubic (score {value:.2f} > {SCORE_LIMIT:g}; "
                       "1 = as good as bicubic): the image is unlike the training data")
    dist = None
    if card is not None:
        if modality and card.modalities and modality.upper() not in card.modalities:
            reasons.append(f"modality {modality} but the model was trained on {'/'.join(card.modalities)}")
        if spacing and card.spacing_mm[1] > 0:
            out = min(float(s) for s in spacing) / factor
            lo, hi = card.spacing_mm
            if not lo / SPACING_SLACK <= out <= hi * SPACING_SLACK:
                reasons.append(f"output pixel spacing {out:.2f} mm is far outside the training range {lo:.2f}-{hi:.2f} mm")
        if card.intensity_quantiles:
            dist = histogram_distance(foreground_quantiles(slices[:, 0].numpy()), card.intensity_quantiles)
            if dist > HISTOGRAM_LIMIT:
                reasons.append(f"intensity histogram differs from the training data's (distance {dist:.2f} > {HISTOGRAM_LIMIT:g})")
    return DomainReport(source, reasons, value, dist)


def write_card(model_file: str | Path, card: DomainCard) -> None:
    """Store `card` in the metadata of a safetensors model file (rewritten atomically; tensors unchanged)."""
    from .checkpointing import update_metadata

    update_metadata(model_file, domain=card.to_json())


def card_from_training(images: np.ndarray, denoiser, factor: float, *, spacing_mm: tuple[float, float] = (0.0, 0.0),
                       n_score: int = 32, **fields) -> DomainCard:
    """A card measured on training images [N, H, W] in [-1, 1]: their foreground intensity
    quantiles and the model score's median and 95th percentile on up to `n_score` of them (as
    low-resolution inputs, like `meddiff sample` sees them); other fields as given."""
    sr = SuperResolution(factor)
    idx = np.linspace(0, len(images) - 1, min(n_score, len(images))).round().astype(int)
    lows = sr.downsample(torch.from_numpy(np.asarray(images[idx], np.float32))[:, None])
    scores = model_score(denoiser, lows, factor)
    return DomainCard(spacing_mm=spacing_mm, intensity_quantiles=foreground_quantiles(lows[:, 0].numpy()),
                      score_reference=(float(np.median(scores)), float(np.quantile(scores, 0.95))), **fields)
