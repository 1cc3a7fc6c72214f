"""Calibration of per-pixel uncertainty: does a high predicted std go with a high error?

Inputs are per-pixel arrays of one shape (any, e.g. ``[B, 1, H, W]``), numpy or torch:

- ``std``: the predicted standard deviation, in practice the spread of S posterior samples
  x^(1..S) ~ p(x | y) per pixel (:func:`meddiff.samplers.run.summarise`, unbiased, S - 1). It
  estimates sigma, the std of the model's posterior, not the error of any one prediction.
- ``error``: prediction - truth, usually the mean of the S samples minus the ground truth.

What a calibrated model predicts for that error. If the truth x* were one more draw from the
model's posterior, independent of the samples, then for the mean m of S samples

    E[(m - x*)^2] = Var(m) + Var(x*) = sigma^2 / S + sigma^2 = sigma^2 (1 + 1/S)       (1)

because m carries its own sampling error (std sigma / sqrt(S)). For one sample (S = 1) this is
2 sigma^2; for S -> infinity it is sigma^2. ``samples=S`` therefore scales the predicted std by
sqrt(1 + 1/S) before comparing it with the error (:func:`error_std_factor`), so that a
calibrated model gives RMSE / predicted = 1 whatever S is. ``samples=None`` compares the std as
given (for an error of the exact posterior mean, or a std that already predicts the error).

Variances, not stds, are averaged. The unbiased sample variance s^2 satisfies E[s^2] = sigma^2,
but E[s] < sigma (Jensen), and averaging stds over a bin of different sigmas also falls below
the root mean variance. So every "predicted std" of a group of pixels below is the root mean
variance RMV = sqrt(mean(std^2)) (times the factor of (1)), compared with the RMSE of the
errors of the same pixels, as in Levi et al., "Evaluating and calibrating uncertainty prediction
in regression tasks", Sensors 2022 (arXiv:1905.11659).

Noisy std and binning. With few samples s^2 is noisy (relative std sqrt(2 / (S - 1)) for
Gaussian samples: 82% at S = 4). Binning pixels by that same noisy std selects, into the top
bin, pixels whose s happened to come out high: their RMV overstates their sigma and the curve
of a calibrated model bends below the identity at high std and above it at low std (regression
to the mean). The overall ratio and ``ause`` are not affected by this; the binned curve and
``ece`` are. ``bin_std``, an independent estimate of the same std (e.g. from a disjoint half of
the samples, with ``std`` from the other half), sorts the pixels into bins instead and removes
the bias.

Measures (all over the pixels the ``mask`` selects):

- Pearson and Spearman correlation of std with |error| (scale-free, so ``samples`` does not
  change them); NaN when either is constant.
- ``ratio`` = RMSE / RMV over all pixels: 1 = calibrated on average, > 1 overconfident (the
  std is too small), < 1 underconfident.
- The binned curve: pixels sorted by std into ``bins`` equal-count bins; per bin RMV, RMSE,
  count. ``ece`` = sum_j (n_j / N) |RMSE_j - RMV_j|, the count-weighted distance of the curve
  from the identity (in image units), a regression analogue of the expected calibration error.
- Sparsification (Ilg et al., "Uncertainty estimates and multi-hypotheses networks for optical
  flow", ECCV 2018, section 5): remove the fraction f of pixels with the highest std and take
  the RMSE of the rest; the oracle removes the highest |error| first. AUSE = area between the
  two curves over f in [0, 1) (trapezoidal rule on f = 0, 1/K, ..., (K-1)/K), in image units;
  0 = the std ranks pixels exactly as their errors do. ``ause_random`` is the expected AUSE of
  a random ranking (RMSE of the rest stays RMSE_all), the scale against which to read ``ause``.
  Ties in std are removed in random order and the curve is the expectation over that order.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Union

import numpy as np
import torch

from ..errors import InputError
from ..io.atomic import atomic_write_with

ArrayLike = Union[np.ndarray, torch.Tensor]

SPARSIFICATION_STEPS = 100  # fractions 0, 0.01, ..., 0.99


@dataclass(frozen=True)
class CalibrationResult:
    """Calibration of one method's uncertainty over N pixels (see the module docstring).

    Curves are tuples (immutable, comparable). ``bin_*`` are ordered by increasing std;
    ``sparsification`` and ``oracle`` are the RMSE of the remaining pixels at ``fractions``.
    """

    n: int
    samples: int | None
    factor: float  # predicted error std = factor * std, eq. (1)
    pearson: float
    spearman: float
    rmse: float
    rmv: float
    ratio: float
    ece: float
    ause: float
    ause_random: float
    bin_rmv: tuple[float, ...]
    bin_rmse: tuple[float, ...]
    bin_count: tuple[int, ...]
    fractions: tuple[float, ...]
    sparsification: tuple[float, ...]
    oracle: tuple[float, ...]

    def to_row(self) -> dict[str, float | int]:
        """Scalars for a results table, in a fixed order (curves left out)."""
        return {
            "pixels": self.n, "pearson": self.pearson, "spearman": self.spearman, "rmse": self.rmse,
            "rmv": self.rmv, "ratio": self.ratio, "ece": self.ece, "ause": self.ause, "ause_random": self.ause_random,
        }


def error_std_factor(samples: int | None) -> float:
    """sqrt(1 + 1/S): predicted std of (mean of S posterior samples - truth) per unit posterior std, eq. (1).

    ``None`` -> 1 (no correction: the error is of the exact posterior mean).
    """
    if samples is None:
        return 1.0
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
        raise InputError(f"samples={samples!r}: expected a whole number >= 1 (how many samples were averaged) or None")
    return math.sqrt(1.0 + 1.0 / int(samples))


def _as_float64(x: ArrayLike, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
        raise InputError(f"{name} must be a numeric array, got dtype {a.dtype}")
    return a.astype(np.float64)


def _select(std: ArrayLike, error: ArrayLike, mask: ArrayLike | None,
            bin_std: ArrayLike | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Flat float64 std, error (and bin_std) at the pixels ``mask`` selects, checked for shape, NaN and sign."""
    s, e = _as_float64(std, "std"), _as_float64(error, "error")
    if s.shape != e.shape:
        raise InputError(f"std shape {s.shape} differs from error shape {e.shape}; expected the same per-pixel shape")
    b = None
    if bin_std is not None:
        b = _as_float64(bin_std, "bin_std")
        if b.shape != s.shape:
            raise InputError(f"bin_std shape {b.shape} differs from std shape {s.shape}")
    if mask is None:
        keep = np.ones(s.shape, dtype=bool)
    else:
        m = _as_float64(mask, "mask")
        if not np.isin(m, (0.0, 1.0)).all():
            raise InputError(f"mask must be boolean or 0/1, got values {np.unique(m)[:5].tolist()}...")
        try:
            keep = np.broadcast_to(m.astype(bool), s.shape)
        except ValueError:
            raise InputError(f"mask shape {m.shape} cannot be broadcast to the std/error shape {s.shape}") from None
    if not keep.any():
        raise InputError("mask selects no pixels; expected at least one true value")
    out = [a[keep] for a in (s, e)] + ([b[keep]] if b is not None else [])
    for a, name in zip(out, ("std", "error", "bin_std")):
        bad = int((~np.isfinite(a)).sum())
        if bad:
            raise InputError(f"{name} has {bad} NaN/inf value(s) among the {a.size} selected pixels; expected finite numbers")
        if name != "error" and (a < 0).any():
            raise InputError(f"{name} has {int((a < 0).sum())} negative value(s) (min {a.min():.4g}); "
                             "a standard deviation must be >= 0")
    if not (out[0] > 0).any():
        raise InputError(f"std is 0 at all {out[0].size} selected pixels; it needs >= 2 samples per pixel "
                         "(meddiff sample --samples N with N >= 2)")
    return out[0], out[1], (out[2] if b is not None else None)


def correlations(std: np.ndarray, abs_error: np.ndarray) -> tuple[float, float]:
    """Pearson and Spearman correlation of std with |error| (scipy.stats); NaN if either is constant."""
    from scipy import stats

    if std.size < 2 or np.ptp(std) == 0 or np.ptp(abs_error) == 0:
        return float("nan"), float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.pearsonr(std, abs_error)[0]), float(stats.spearmanr(std, abs_error)[0])


def binned_curve(pred_std: np.ndarray, error: np.ndarray, bins: int,
                 sort_by: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per bin RMV = sqrt(mean pred_std^2), RMSE = sqrt(mean error^2) and count.

    Pixels are sorted by ``sort_by`` (default ``pred_std``; ties keep their input order) and cut
    into ``min(bins, N)`` bins of equal count (sizes differ by at most one).
    """
    order = np.argsort(pred_std if sort_by is None else sort_by, kind="stable")
    groups = np.array_split(order, min(bins, order.size))
    rmv = np.array([math.sqrt(np.mean(pred_std[g] ** 2)) for g in groups])
    rmse = np.array([math.sqrt(np.mean(error[g] ** 2)) for g in groups])
    return rmv, rmse, np.array([g.size for g in groups])


def expected_calibration_error(rmv: np.ndarray, rmse: np.ndarray, count: np.ndarray) -> float:
    """sum_j (n_j / N) |RMSE_j - RMV_j| over the bins (image units; 0 = on the identity line)."""
    return float(np.sum(count * np.abs(rmse - rmv)) / np.sum(count))


def sparsification_curve(key: np.ndarray, sq_error: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """RMSE of the pixels left after removing the fraction f with the largest ``key`` (Ilg et al. 2018).

    k = floor(f N) pixels are removed (f < 1, so at least one is left). Among pixels with equal
    key the removal order is random; the sum of squared errors removed is then, in expectation,
    linear in k across each run of ties, so it is interpolated between the ends of the runs.
    """
    n = key.size
    order = np.argsort(-key, kind="stable")
    k_sorted, removed = key[order], np.concatenate([[0.0], np.cumsum(sq_error[order])])
    ends = np.flatnonzero(np.r_[True, k_sorted[1:] != k_sorted[:-1], True])  # run boundaries, 0..n
    k = np.floor(fractions * n)
    left = np.interp(k, ends, removed[ends])
    return np.sqrt(np.maximum(removed[-1] - left, 0.0) / (n - k))


def area(fractions: np.ndarray, curve: np.ndarray) -> float:
    """Trapezoidal area under ``curve`` over ``fractions``."""
    return float(np.sum((curve[1:] + curve[:-1]) * np.diff(fractions)) / 2)


def calibration(std: ArrayLike, error: ArrayLike, mask: ArrayLike | None = None, bins: int = 10, *,
                samples: int | None = None, bin_std: ArrayLike | None = None,
                steps: int = SPARSIFICATION_STEPS) -> CalibrationResult:
    """Calibration of a per-pixel ``std`` against ``error`` = prediction - truth (module docstring).

    std, error: same shape, any layout; mask: bool or 0/1, broadcastable to that shape (only
    its pixels count; NaN outside it is allowed; it should not depend on the error, e.g. a
    threshold on the truth just above an exactly flat background, not inside the noisy tissue
    range, or it selects errors of one sign). samples: how many posterior samples were
    averaged into the prediction (eq. (1); None = no correction). bin_std: an independent std
    estimate to sort pixels into bins by. steps: K, fractions of the sparsification curve.
    """
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise InputError(f"bins={bins!r}: expected a whole number >= 1")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 2:
        raise InputError(f"steps={steps!r}: expected a whole number >= 2")
    factor = error_std_factor(samples)
    s, e, b = _select(std, error, mask, bin_std)
    pred = factor * s
    pearson, spearman = correlations(s, np.abs(e))
    rmse, rmv = math.sqrt(np.mean(e**2)), math.sqrt(np.mean(pred**2))
    bin_rmv, bin_rmse, count = binned_curve(pred, e, bins, sort_by=b)
    fractions = np.arange(steps) / steps
    sq = e**2
    by_std, oracle = sparsification_curve(s, sq, fractions), sparsification_curve(np.abs(e), sq, fractions)
    ause = area(fractions, by_std - oracle)
    return CalibrationResult(
        n=int(s.size), samples=None if samples is None else int(samples), factor=factor,
        pearson=pearson, spearman=spearman, rmse=rmse, rmv=rmv, ratio=rmse / rmv,
        ece=expected_calibration_error(bin_rmv, bin_rmse, count),
        ause=ause, ause_random=area(fractions, rmse - oracle),
        bin_rmv=tuple(bin_rmv.tolist()), bin_rmse=tuple(bin_rmse.tolist()), bin_count=tuple(int(c) for c in count),
        fractions=tuple(fractions.tolist()), sparsification=tuple(by_std.tolist()), oracle=tuple(oracle.tolist()),
    )


def calibration_figure(results: CalibrationResult | Mapping[str, CalibrationResult], path: str | Path, *,
                       title: str | None = None) -> Path:
    """PNG with two panels, written atomically: binned RMSE vs predicted std (RMV) with the
    identity line, and the sparsification curves (by std, oracle, random) against the fraction
    removed. ``results``: one result or ``{label: result}`` to overlay several methods.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if isinstance(results, CalibrationResult):
        results = {"": results}
    if not results or not all(isinstance(r, CalibrationResult) for r in results.values()):
        raise InputError("calibration_figure needs a CalibrationResult or a non-empty {label: CalibrationResult} mapping")
    fig = Figure(figsize=(10, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    top = max(max(r.bin_rmv + r.bin_rmse) for r in results.values()) * 1.05 or 1.0
    ax1.plot([0, top], [0, top], "k--", lw=1, label="calibrated (identity)")
    for i, (label, r) in enumerate(results.items()):
        colour = f"C{i}"
        name = f"{label}: " if label else ""
        corr = "" if r.samples is None else f", std x sqrt(1+1/{r.samples})"
        ax1.plot(r.bin_rmv, r.bin_rmse, "o-", color=colour, label=f"{name}RMSE/std {r.ratio:.2f}, ECE {r.ece:.3g}{corr}")
        ax2.plot(r.fractions, r.sparsification, "-", color=colour, label=f"{name}by std (AUSE {r.ause:.3g})")
        ax2.plot(r.fractions, r.oracle, ":", color=colour, label=f"{name}oracle (by |error|)")
        ax2.axhline(r.rmse, color=colour, lw=0.8, alpha=0.5, label=f"{name}random (AUSE {r.ause_random:.3g})")
    ax1.set(xlim=(0, top), ylim=(0, top), xlabel="predicted std of the error (root mean variance per bin)",
            ylabel="RMSE of the error in the bin", title="error vs predicted std")
    ax2.set(xlabel="fraction of pixels removed (highest first)", ylabel="RMSE of the remaining pixels",
            ylim=(0, None), title="sparsification (Ilg et al. 2018)")
    for ax in (ax1, ax2):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="upper left" if ax is ax1 else "best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png"))
    return Path(path)
