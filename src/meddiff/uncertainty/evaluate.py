"""How well per-pixel intervals and predicted errors hold on images with a known truth (issue 30).

For one set of pixels (one held-out source and degradation, never pooled across them), given the
restored image, the truth, the predicted RMS error and the interval [lower, upper]:

- reliability: pixels sorted by predicted error into deciles (equal counts); per decile the
  predicted RMS error (root mean of pred^2) and the actual RMSE; ``slope`` of the least-squares
  line actual = a + slope * predicted through the deciles (1 = calibrated ranking); ``ece`` =
  count-weighted mean |actual - predicted| (meddiff.metrics.calibration); ``worst_ratio`` =
  max over deciles of max(actual / predicted, predicted / actual) (target <= 1.5);
- ``spearman``: rank correlation of |error| and predicted error over the pixels (target >= 0.4);
- ``coverage``: share of pixels with lower <= truth <= upper (target 0.88-0.92 at 90%).

:func:`reliability_figure` draws the decile curves (benchmarks/calibration_heldout.py, `meddiff demo`).

Only pixels inside the anatomy count: :func:`anatomy_mask`, a mask of the truth that does not
depend on the error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
from scipy import ndimage

from ..metrics.calibration import calibration


def anatomy_mask(truth: np.ndarray, level: float = -0.9) -> np.ndarray:
    """Pixels inside the anatomy of a truth image [H, W] in [-1, 1]: its Gaussian smoothing (1 px)
    above `level` (5% of the range above black), faint specks (under 3x3 after smoothing) removed, holes (dark CSF,
    vessels) filled."""
    m = ndimage.gaussian_filter(np.asarray(truth, np.float64), 1.0) > level
    m = ndimage.binary_opening(m, np.ones((3, 3), bool))
    return ndimage.binary_fill_holes(m)


@dataclass(frozen=True)
class IntervalReport:
    pixels: int
    coverage: float
    spearman: float
    slope: float
    ece: float
    worst_ratio: float
    rmse: float
    predicted: float
    decile_predicted: tuple[float, ...]
    decile_actual: tuple[float, ...]

    def meets(self, lo: float = 0.88, hi: float = 0.92, ratio: float = 1.5, rho: float = 0.4) -> dict[str, bool]:
        """Which targets of issue 30 this set of pixels meets."""
        return {"coverage": lo <= self.coverage <= hi, "deciles": self.worst_ratio <= ratio, "spearman": self.spearman >= rho}


def interval_report(error: np.ndarray, predicted: np.ndarray, covered: np.ndarray, mask: np.ndarray | None = None) -> IntervalReport:
    """The measures of the module docstring; arrays of one shape: error = restored - truth,
    predicted RMS error (> 0), covered = truth inside the interval (bool), mask = pixels that count."""
    keep = np.ones(np.shape(error), bool) if mask is None else np.asarray(mask, bool)
    e, p, c = (np.asarray(a)[keep].astype(np.float64) for a in (error, predicted, covered))
    res = calibration(p, e, bins=10)
    pred, act = np.asarray(res.bin_rmv), np.asarray(res.bin_rmse)
    slope = float(np.polyfit(pred, act, 1)[0]) if np.ptp(pred) > 0 else float("nan")
    worst = float(np.max(np.maximum(act / pred, pred / np.maximum(act, 1e-12))))
    return IntervalReport(int(e.size), float(c.mean()), res.spearman, slope, res.ece, worst, res.rmse, res.rmv,
                          tuple(pred.tolist()), tuple(act.tolist()))


def reliability_figure(panels: Mapping[str, Mapping[str, IntervalReport]], path, *, ratio: float = 1.5):
    """Reliability diagrams as a PNG written atomically, one panel per title of `panels`: per report
    ({label: IntervalReport}) the actual RMSE against the predicted RMS error of each decile of
    predicted error, with the identity (calibrated) and the band within `ratio` x of it (the target)."""
    from pathlib import Path

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..errors import InputError
    from ..io.atomic import atomic_write_with

    reps = [r for p in panels.values() for r in p.values()]
    if not reps:
        raise InputError("reliability_figure needs at least one panel with one IntervalReport")
    fig = Figure(figsize=(4.2 * len(panels), 4.2), dpi=100)
    FigureCanvasAgg(fig)
    top = max(max(r.decile_predicted + r.decile_actual) for r in reps) * 1.05 or 1.0
    for i, (title, reports) in enumerate(panels.items()):
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.plot([0, top], [0, top], "k--", lw=1, label="calibrated")
        ax.fill_between([0, top], [0, top / ratio], [0, top * ratio], color="0.85", label=f"within {ratio:g}x")
        for label, r in reports.items():
            ax.plot(r.decile_predicted, r.decile_actual, "o-", ms=3, label=f"{label} (cov {r.coverage:.2f})")
        ax.set(xlim=(0, top), ylim=(0, top), xlabel="predicted RMS error (decile)", ylabel="actual RMSE (decile)",
               title=title)
        ax.legend(fontsize=6)
    fig.tight_layout()
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png"))
    return Path(path)
