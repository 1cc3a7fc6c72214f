"""A negative KID (unbiased MMD² at a tiny n) is shown as "n too small", and never wins."""

from __future__ import annotations

import math

from meddiff.metrics.table import MetricStats, TableRow, best_methods, to_markdown


def test_negative_kid_reads_n_too_small():
    rows = [TableRow("a", {"kid": MetricStats(-0.0031, math.nan, 4)}), TableRow("b", {"kid": MetricStats(0.012, math.nan, 4)}),
            TableRow("c", {"kid": MetricStats(0.020, math.nan, 4)})]
    md = to_markdown(rows)
    assert "| a | 4 | n too small (-0.0031 < 0) |" in md and "| b | 4 | 0.0120 |" in md
    assert best_methods(rows, "kid") == {"b"}  # not the negative estimate
