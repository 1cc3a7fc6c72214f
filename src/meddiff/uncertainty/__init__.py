"""Per-pixel uncertainty that carries the systematic error (issue 30), for one-call restorations too.

features.py: an error scale u from what inference has (restored image, condition, measurement,
sample std): a fixed heuristic or a least-squares regressor of log |error| on a few image features
(no network call). conformal.py: split-conformal intervals per bins of u (Mondrian). calibrate.py:
the two fitted on training-distribution images (scripts/uncertainty_card.py) and stored in the
model file; maps.py: `meddiff sample --interval P`; evaluate.py: coverage, reliability by deciles
and rank correlation on images with a truth (benchmarks/calibration_heldout.py). docs/uncertainty.md.
"""

from .calibrate import IntervalCalibration, calibration_for, fit_calibration, read_calibrations, store_calibration
from .conformal import ConformalTable, apply_table, fit_table, interval_coverage
from .evaluate import anatomy_mask, interval_report
from .features import ErrorRegressor, error_scale, feature_stack, fit_regressor
from .maps import calibration_for_request, interval_maps

__all__ = ["ConformalTable", "ErrorRegressor", "IntervalCalibration", "anatomy_mask", "apply_table", "calibration_for",
           "calibration_for_request", "error_scale", "feature_stack", "fit_calibration", "fit_regressor", "fit_table",
           "interval_coverage", "interval_maps", "interval_report", "read_calibrations", "store_calibration"]
