"""Split conformal intervals per bins of a predicted error scale (Vovk et al. 2005; Angelopoulos &
Bates, "A gentle introduction to conformal prediction", 2021, section 2.3 "normalised scores",
and section 4.3 "Mondrian"/class-conditional conformal, here with bins of the scale as classes).

Given, on a calibration split, per pixel a positive scale u_i (any heuristic error predictor, e.g.
the local gradient of the restored image or the sample spread) and the actual error e_i:

    score       s_i = |e_i| / u_i                                                 (1)
    bins        B_1..B_K: equal-count bins of u (edges = quantiles of u)
    per bin     q_k = the ceil((n_k + 1) alpha) / n_k empirical quantile of s in B_k   (2)
                r_k = sqrt(mean e^2 / mean u^2 in B_k)  (predicted RMSE per unit scale)  (3)
    at a pixel  half-width = q_k u, predicted RMS error = r_k u, k = bin of u

If calibration and test pixels are exchangeable within a bin, P(|e| <= q_k u) >= alpha in every
bin (the finite-sample guarantee of split conformal); (3) makes the reliability diagram exact on
the calibration split. Neither holds under a shift between calibration and test data: that is
what benchmarks/calibration_heldout.py measures per held-out source.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import InputError


@dataclass(frozen=True)
class ConformalTable:
    """What fit_table learnt: bin edges of the scale (K - 1 interior edges), per bin the conformal
    quantile q_k of |e| / u at level `alpha` and r_k = RMS(e) / RMS(u); `note`: the calibration data."""

    alpha: float
    edges: tuple[float, ...]
    q: tuple[float, ...]
    rms: tuple[float, ...]
    count: tuple[int, ...]
    note: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "ConformalTable":
        d = json.loads(text)
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def _flat(scale, error) -> tuple[np.ndarray, np.ndarray]:
    u, e = np.asarray(scale, np.float64).ravel(), np.asarray(error, np.float64).ravel()
    if u.shape != e.shape:
        raise InputError(f"scale has {u.size} values, error {e.size}; expected one per pixel")
    if not (np.isfinite(u).all() and np.isfinite(e).all()):
        raise InputError("scale and error must be finite")
    if (u <= 0).any():
        raise InputError(f"scale has {int((u <= 0).sum())} value(s) <= 0; expected a positive error scale")
    return u, e


def conformal_quantile(scores: np.ndarray, alpha: float) -> float:
    """The ceil((n + 1) alpha)-th smallest of n scores (eq. 2); inf if that exceeds n."""
    n = scores.size
    k = math.ceil((n + 1) * alpha)
    return float("inf") if k > n else float(np.partition(scores, k - 1)[k - 1])


def fit_table(scale, error, alpha: float = 0.9, bins: int = 10, note: str = "") -> ConformalTable:
    """Fit eqs. (1)-(3) on calibration pixels: scale u > 0 and error e of one shape."""
    if not 0 < alpha < 1:
        raise InputError(f"alpha={alpha}: expected a coverage level in (0, 1), e.g. 0.9")
    u, e = _flat(scale, error)
    if u.size < bins:
        raise InputError(f"{u.size} calibration pixels for {bins} bins; expected at least one per bin")
    edges = np.quantile(u, np.arange(1, bins) / bins)
    k = np.searchsorted(edges, u, side="right")
    s = np.abs(e) / u
    q, rms, count = [], [], []
    for b in range(bins):
        sb = s[k == b]
        sel = k == b if (k == b).any() else np.ones_like(k, bool)  # ties in u collapse a bin: pooled values
        q.append(conformal_quantile(s[sel], alpha))
        rms.append(float(np.sqrt(np.mean(e[sel] ** 2) / np.mean(u[sel] ** 2))))
        count.append(int((k == b).sum()))
    return ConformalTable(alpha, tuple(edges.tolist()), tuple(q), tuple(rms), tuple(count), note)


def apply_table(table: ConformalTable, scale) -> tuple[np.ndarray, np.ndarray]:
    """(half-width of the alpha interval, predicted RMS error) per pixel of `scale` (same shape)."""
    u = np.asarray(scale, np.float64)
    if (u <= 0).any() or not np.isfinite(u).all():
        raise InputError("scale must be finite and > 0 at every pixel")
    k = np.searchsorted(np.asarray(table.edges), u, side="right")
    return np.asarray(table.q)[k] * u, np.asarray(table.rms)[k] * u


def interval_coverage(error, half_width, mask=None) -> float:
    """Share of (masked) pixels with |error| <= half_width."""
    inside = np.abs(np.asarray(error)) <= np.asarray(half_width)
    return float(inside[np.asarray(mask, bool)].mean() if mask is not None else inside.mean())
