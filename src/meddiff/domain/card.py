"""What a restoration model was trained on, and whether an input looks like it handles it (issues 13, 29).

A super-resolution model trained on one kind of image paints that kind's texture onto whatever
it is given, and one trained on anti-aliased downsampling amplifies the ringing of a k-space
truncation. The check answers one question per input: will the model do worse than bicubic
interpolation here? It is measured as a classifier (benchmarks/domain_check.py, docs/domain.md).

Flags (``DomainReport.reasons``; `meddiff sample` warns once after the run, ``--strict-domain``
refuses the input before sampling):

1. **Modality**: the DICOM Modality against the modalities of the training data.
2. **Signals** (SIGNALS), each against a threshold fitted on the model's *training side*
   (scripts/domain_thresholds.py, stored in the card's ``thresholds``; DEFAULT_THRESHOLDS otherwise):
   - ``score``, model-based (needs no truth): at the input's *own* scale, degrade the input y by
     the model's factor again, y' = up(down(y)), and ask the model for its one-step estimate of y
     from (y', noise at a mid level), as sampling starts: E|x0_hat - y|^2 / E|y' - y|^2 (below 1
     the model improves on bicubic on this image's own content);
   - ``edge_max`` / ``edge_min``: the delivered image's spectral energy at the edge of its band
     (spectrum_edge_ratio): flat to the cut after a k-space truncation (Gibbs ringing) or with
     noise, empty after zero-filled interpolation, rolled off after the anti-aliased downsampling
     the model trained on;
   - ``rolloff``: the band edge's distance from the power law of the rest of the spectrum
     (spectral_rolloff): the content-independent version of the same;
   - ``noise``: a robust noise std (noise_sigma);
   - ``consistency`` (after sampling): RMS(down(x_hat) - y) / RMS(down(up(y)) - y);
   - ``histogram``: the 1-Wasserstein distance of the foreground intensity quantiles to the
     training data's (only where a threshold was fitted for it).

Notes (``DomainReport.notes``, reported, never a flag): the output pixel spacing outside
SPACING_MEASURED_MM and, without a fitted threshold, an intensity histogram far from the training
data's: measured, neither predicts a loss to bicubic (docs/domain.md).

The card is stored as JSON in the model file's metadata (key ``domain``) by
``scripts/domain_card.py`` (and its thresholds by ``scripts/domain_thresholds.py``).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..data.degrade import SuperResolution

Tensor = torch.Tensor
QUANTILES = tuple(np.round(np.linspace(0.05, 0.95, 19), 2).tolist())
SCORE_LIMIT = 1.0  # the model-based score above which an input is out of the model's depth
HISTOGRAM_LIMIT = 0.25  # 1-Wasserstein distance in [-1, 1] units above which intensities look foreign


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
    thresholds: dict = field(default_factory=dict)  # {signal: [direction, limit]} fitted by scripts/domain_thresholds.py (SIGNALS)

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
    from ..samplers.run import image_seed, pad_planes
    from ..samplers.noise import generators_for, randn_per_image

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
    """The findings for one input: why the check expects the model to do worse than bicubic on it
    (`reasons`, empty = no flag), facts that do not predict that by themselves (`notes`), and the numbers."""

    source: str
    reasons: list[str]
    score: float | None  # None: the input was too small to score
    histogram_distance: float | None = None
    consistency: float | None = None  # set after sampling (check_output)
    notes: list[str] = field(default_factory=list)
    signals: dict = field(default_factory=dict)  # every value of SIGNALS (NaN: not measured)
    worse_than_bicubic: bool = False  # a fitted signal (not the modality) predicts a loss to bicubic

    @property
    def in_domain(self) -> bool:
        return not self.reasons


#: thresholds of a model whose card has none fitted (scripts/domain_thresholds.py): the score and the
#: consistency ratio at 1, where they say "as good as bicubic" on the input's own content
DEFAULT_THRESHOLDS = {"score": ["high", SCORE_LIMIT], "consistency": ["high", SCORE_LIMIT]}
#: the output spacing range over which sr_x4_general was measured to beat bicubic (benchmarks/domain_check.py
#: --spacing-sweep, MNI152 resampled; 6/6 slices won from 0.5 to 3 mm): outside it the spacing is a note, not a flag
SPACING_MEASURED_MM = (0.5, 3.0)

_WHY = {
    "score": "at its own scale the model's estimate is worse than its fitted limit (score {v:.2f} > {t:.2f}; 1 = as good as bicubic)",
    "edge_max": "its spectrum stays flat to the band edge, as a k-space truncation (Gibbs ringing) or noise leaves it "
                "(edge energy {v:.3f} > {t:.3f}); the model trained on anti-aliased downsampling",
    "edge_min": "its outer band is empty, as zero-filled (sinc) interpolation leaves it (edge energy {v:.4f} < {t:.4f})",
    "rolloff": "its spectrum runs on to the band edge instead of rolling off, as after a k-space truncation "
               "(Gibbs ringing) or with noise (edge roll-off {v:+.2f} > {t:+.2f}; anti-aliased downsampling gives below 0)",
    "noise": "it is noisier than the inputs the model wins on (noise std {v:.3f} > {t:.3f} in [-1, 1] units)",
    "consistency": "after sampling, the output agrees with the measured image less than the fitted limit "
                   "(consistency ratio {v:.2f} > {t:.2f}; 1 = as well as bicubic)",
    "histogram": "its intensity histogram is far from the training data's (distance {v:.2f} > {t:.2f})",
}


def thresholds_of(card: DomainCard | None) -> dict:
    """The card's fitted thresholds, or DEFAULT_THRESHOLDS."""
    return dict(card.thresholds) if card is not None and card.thresholds else dict(DEFAULT_THRESHOLDS)


def _reasons(values: dict, thresholds: dict, names: Sequence[str]) -> list[str]:
    fired = flagged_by({k: values.get(k, float("nan")) for k in names}, {k: v for k, v in thresholds.items() if k in names})
    return [_WHY[k].format(v=float(values[k]), t=float(thresholds[k][1])) for k in fired]


def check_input(source: str, slices: Tensor, modality: str | None, spacing: Sequence[float] | None, factor: float,
                denoiser, card: DomainCard | None, *, score: bool = True) -> DomainReport:
    """Check one input before sampling (its normalised low-resolution slices [N, 1, h, w]; DICOM modality
    or None; in-plane spacing of the low-resolution input or None) against `card`. score=False skips the
    model-based score (inputs under ~32 pixels give no meaningful one).

    Flags (reasons): a modality the model never saw, and every signal beyond the card's fitted
    threshold (thresholds_of). Notes: the output spacing outside SPACING_MEASURED_MM, an intensity
    histogram far from the training data's (HISTOGRAM_LIMIT) when no threshold was fitted for it."""
    values = signals(slices, factor, denoiser if score else None, card=card, score=score)
    limits = thresholds_of(card)
    reasons: list[str] = []
    notes: list[str] = []
    if card is not None and modality and card.modalities and modality.upper() not in card.modalities:
        reasons.append(f"modality {modality} but the model was trained on {'/'.join(card.modalities)}")
    pre = [k for k in SIGNALS if k != "consistency"]
    fired = _reasons(values, limits, pre)
    reasons += fired
    if spacing:
        out = min(float(s) for s in spacing) / factor
        lo, hi = SPACING_MEASURED_MM
        if not lo <= out <= hi:
            notes.append(f"output pixel spacing {out:.2f} mm is outside {lo:g}-{hi:g} mm, where the model was measured "
                         "to beat bicubic (the content's scale in pixels matters, not millimetres)")
    dist = values["histogram"]
    if np.isfinite(dist) and "histogram" not in limits and dist > HISTOGRAM_LIMIT:
        notes.append(f"intensity histogram differs from the training data's (distance {dist:.2f} > {HISTOGRAM_LIMIT:g})")
    nan_none = lambda v: None if not np.isfinite(v) else float(v)  # noqa: E731
    return DomainReport(source, reasons, nan_none(values["score"]), nan_none(dist), notes=notes,
                        signals={k: nan_none(v) for k, v in values.items()}, worse_than_bicubic=bool(fired))


def check_output(report: DomainReport, restored: Tensor, lowres: Tensor, factor: float, card: DomainCard | None) -> bool:
    """After sampling: the consistency ratio of `restored` ([N, 1, H, W] or samples [S, N, 1, H, W]) with the
    measurement `lowres` [N, 1, h, w], against the card's threshold; adds the reason to `report`.
    Returns whether it fired."""
    r = restored if restored.ndim == 4 else restored.mean(0)
    report.consistency = consistency_ratio(r, lowres, factor)
    report.signals["consistency"] = report.consistency
    fired = _reasons(report.signals, thresholds_of(card), ["consistency"])
    report.reasons += fired
    report.worse_than_bicubic = report.worse_than_bicubic or bool(fired)
    return bool(fired)


def write_card(model_file: str | Path, card: DomainCard) -> None:
    """Store `card` in the metadata of a safetensors model file (rewritten atomically; tensors unchanged)."""
    from ..checkpointing import update_metadata

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


def _hann(n: int) -> Tensor:
    return torch.hann_window(n, periodic=False, dtype=torch.float64) if n > 1 else torch.ones(1, dtype=torch.float64)


@torch.no_grad()
def spectrum_edge_ratio(lowres: Tensor, edge: tuple[float, float] = (0.8, 1.0), mid: tuple[float, float] = (0.3, 0.6)) -> np.ndarray:
    """Per image and axis, how much of the delivered image's spectrum sits at the edge of its band:
    E_a = sum of |FFT(w y)|^2 over |kappa_a| in `edge` / the same over |kappa_a| in `mid`, kappa_a the
    frequency along axis a as a fraction of Nyquist, w a separable Hann window (no wrap-around edges),
    for lowres y [N, 1, h, w] -> [N, 2] (rows axis, columns axis).

    An anti-aliased (bicubic) downsampling rolls the spectrum off before Nyquist; a k-space
    truncation keeps it flat to the cut (Gibbs ringing), and noise adds a flat floor, so both raise
    E; a zero-filled interpolation leaves the outer band empty, so it lowers E."""
    y = lowres[:, 0].double()
    y = y - y.mean(dim=(-2, -1), keepdim=True)
    h, w = y.shape[-2:]
    P = torch.fft.fft2(y * _hann(h)[:, None] * _hann(w)[None, :]).abs() ** 2  # [N, h, w]
    out = np.zeros((len(y), 2))
    for a, n in enumerate((h, w)):
        kappa = (torch.fft.fftfreq(n, dtype=torch.float64).abs() * 2)  # 0 .. 1 (Nyquist)
        marg = P.sum(dim=2 - a)  # [N, n] energy per frequency along axis a
        sel = lambda band: ((kappa >= band[0]) & (kappa <= band[1])).double()  # noqa: E731
        e, m = (marg * sel(edge)).sum(-1) / sel(edge).sum().clamp_min(1), (marg * sel(mid)).sum(-1) / sel(mid).sum().clamp_min(1)
        out[:, a] = (e / m.clamp_min(1e-20)).numpy()
    return out


@torch.no_grad()
def spectral_rolloff(lowres: Tensor, fit: tuple[float, float] = (0.2, 0.6), edge: tuple[float, float] = (0.8, 1.0)) -> np.ndarray:
    """Per image and axis, how far the band edge of the delivered image's spectrum sits from the power law
    of the rest of its band: log P_a(kappa) (the Hann-windowed power spectrum summed over the other axis,
    per frequency kappa in Nyquist units) is fitted as c0 + c1 log kappa over `fit`, and the result is
    the mean of log P_a - fit over `edge` ([N, 1, h, w] -> [N, 2], natural-log units).

    Less content-dependent than spectrum_edge_ratio: anti-aliased (bicubic) downsampling rolls the edge
    off below the power law (negative); a k-space truncation keeps it on the law (about 0, the Gibbs
    ringing of a sharp cut); noise that dominates the edge but not the middle of the band lifts it."""
    y = lowres[:, 0].double()
    y = y - y.mean(dim=(-2, -1), keepdim=True)
    h, w = y.shape[-2:]
    P = torch.fft.fft2(y * _hann(h)[:, None] * _hann(w)[None, :]).abs() ** 2
    out = np.zeros((len(y), 2))
    for a, n in enumerate((h, w)):
        kappa = torch.fft.fftfreq(n, dtype=torch.float64).abs() * 2
        ks = torch.unique(kappa)
        marg = P.sum(dim=2 - a)  # [N, n]
        lp = torch.stack([torch.log(marg[:, kappa == k].mean(-1) + 1e-30) for k in ks], -1)  # [N, K]
        f, e = (ks >= fit[0]) & (ks <= fit[1]), (ks >= edge[0]) & (ks <= edge[1])
        if int(f.sum()) < 2 or not bool(e.any()):
            out[:, a] = np.nan
            continue
        A = torch.stack([torch.ones(int(f.sum()), dtype=torch.float64), torch.log(ks[f])], 1)  # [F, 2]
        coef = torch.linalg.lstsq(A, lp[:, f].T).solution  # [2, N]
        pred = coef[0][:, None] + coef[1][:, None] * torch.log(ks[e])[None]
        out[:, a] = (lp[:, e] - pred).mean(-1).numpy()
    return out


@torch.no_grad()
def noise_sigma(lowres: Tensor) -> np.ndarray:
    """Robust noise std of each image [N, 1, h, w] (Donoho & Johnstone 1994: median |HH| / 0.6745 of the
    finest Haar diagonal detail, HH = (a - b - c + d) / 2 over 2x2 blocks) -> [N], in the image's units."""
    y = lowres[:, 0].double()
    h, w = (y.shape[-2] // 2) * 2, (y.shape[-1] // 2) * 2
    y = y[:, :h, :w]
    hh = (y[:, 0::2, 0::2] - y[:, 0::2, 1::2] - y[:, 1::2, 0::2] + y[:, 1::2, 1::2]) / 2
    return (hh.abs().flatten(1).median(dim=1).values / 0.6745).numpy()


#: the check's signals: name -> the direction that predicts a loss to bicubic ("high": large values, "low": small)
SIGNALS = {"score": "high", "edge_max": "high", "edge_min": "low", "rolloff": "high", "noise": "high", "consistency": "high",
           "histogram": "high"}


@torch.no_grad()
def signals(lowres: Tensor, factor: float, denoiser=None, *, restored: Tensor | None = None, card: "DomainCard | None" = None,
            score: bool = True) -> dict[str, float]:
    """Every signal of SIGNALS for one input (its delivered low-resolution slices [N, 1, h, w] in [-1, 1]; the
    median over slices), NaN where it cannot be measured: score (model_score, needs a denoiser and
    score=True), edge_max / edge_min (spectrum_edge_ratio, the larger / smaller of the two axes), rolloff
    (spectral_rolloff, the larger of the two axes), noise
    (noise_sigma), consistency (consistency_ratio of `restored` [N, 1, H, W] or [S, N, 1, H, W], after
    sampling), histogram (histogram_distance to the card's quantiles)."""
    nan = float("nan")
    e = spectrum_edge_ratio(lowres)
    out = {"score": float(np.median(model_score(denoiser, lowres, factor))) if score and denoiser is not None else nan,
           "edge_max": float(np.median(e.max(axis=1))), "edge_min": float(np.median(e.min(axis=1))),
           "rolloff": float(np.median(spectral_rolloff(lowres).max(axis=1))),
           "noise": float(np.median(noise_sigma(lowres))), "consistency": nan, "histogram": nan}
    if restored is not None:
        r = restored if restored.ndim == 4 else restored.mean(0)
        out["consistency"] = consistency_ratio(r, lowres, factor)
    if card is not None and card.intensity_quantiles:
        out["histogram"] = histogram_distance(foreground_quantiles(lowres[:, 0].numpy()), card.intensity_quantiles)
    return out


def flagged_by(values: dict, thresholds: dict) -> list[str]:
    """The signals whose value is beyond its threshold ({name: [direction, limit]}); NaN never flags."""
    fired = []
    for name, (direction, limit) in thresholds.items():
        v = values.get(name, float("nan"))
        if v is None or not np.isfinite(float(v)):
            continue
        if (direction == "high" and float(v) > limit) or (direction == "low" and float(v) < limit):
            fired.append(name)
    return fired


FIT_LEVELS = (None, 0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08)  # share of winning inputs one signal may flag alone


def fit_thresholds(rows: Sequence[dict], names: dict[str, str], false_alarm: float, group: str | None = None) -> dict[str, list]:
    """Thresholds {name: [direction, limit]} that flag the most losing rows (row["loss"] True) while the
    union flags at most `false_alarm` of the winning rows (of every value of row[group] separately, when
    `group` is given: the target holds per source): each signal's limit is the (1 - q) quantile of its
    values on the winning rows (q in FIT_LEVELS, None = unused), over every combination of q."""
    import itertools

    loss = np.array([bool(r["loss"]) for r in rows])
    groups = np.array([str(r[group]) if group else "" for r in rows])
    win_groups = [(groups == g) & ~loss for g in dict.fromkeys(groups[~loss])]
    cols, cand = [], []
    for name, direction in names.items():
        v = np.array([float(r.get(name, np.nan)) for r in rows])
        if not np.isfinite(v).any():
            continue
        w = v[~loss & np.isfinite(v)]
        opts: list = [None]
        for q in FIT_LEVELS[1:]:
            lim = float(np.quantile(w, 1 - q if direction == "high" else q)) if w.size else float(np.nanmax(v))
            flag = np.where(np.isfinite(v), v > lim if direction == "high" else v < lim, False)
            opts.append((lim, flag))
        cols.append((name, direction))
        cand.append(opts)
    best, best_key = {}, (-1, 0)
    for combo in itertools.product(*cand):
        flag = np.zeros(len(rows), bool)
        for c in combo:
            if c is not None:
                flag |= c[1]
        if any(flag[m].sum() > false_alarm * m.sum() for m in win_groups):
            continue
        key = (int(flag[loss].sum()), -int(flag[~loss].sum()))
        if key > best_key:
            best_key = key
            best = {n: [d, c[0]] for (n, d), c in zip(cols, combo) if c is not None}
    return best
