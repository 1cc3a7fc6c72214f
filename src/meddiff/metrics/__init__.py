"""Image metrics, result tables and the HTML report.

- :mod:`.image`: psnr, ssim, accutance, gradient_ratio, image_metrics, aggregate
- :mod:`.compare`: evaluate_arrays / per_image_metrics (methods vs ground truth)
- :mod:`.table`: TableRow, to_markdown, to_csv, read_csv, write_table, write_per_image_csv
- :mod:`.report`: write_html_report (self-contained HTML)
- :mod:`.calibration`: calibration (per-pixel std vs error: correlation, binned curve, AUSE), calibration_figure
"""

from .calibration import CalibrationResult, calibration, calibration_figure
from .compare import evaluate_arrays, per_image_metrics
from .image import accutance, aggregate, edge_mask, gradient_ratio, image_metrics, psnr, ssim
from .table import MetricStats, TableRow, to_markdown, write_table

__all__ = [
    "CalibrationResult", "MetricStats", "TableRow", "accutance", "aggregate", "calibration", "calibration_figure",
    "edge_mask", "evaluate_arrays", "gradient_ratio", "image_metrics", "per_image_metrics", "psnr", "ssim",
    "to_markdown", "write_table",
]
