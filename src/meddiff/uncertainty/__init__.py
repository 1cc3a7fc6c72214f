"""Per-pixel uncertainty that carries the systematic error (issue 30): features available at
inference (restored image, condition, low-resolution measurement, sample spread) -> a predicted
error scale, calibrated by split conformal prediction per bins of that scale (conformal.py).

Status: the conformal math and its calibration table are here and tested; fitting on a named
calibration split, the `--interval` CLI and the held-out benchmark are not wired yet (docs/uncertainty.md).
"""

from .conformal import ConformalTable, apply_table, fit_table, interval_coverage
from .features import error_scale

__all__ = ["ConformalTable", "apply_table", "error_scale", "fit_table", "interval_coverage"]
