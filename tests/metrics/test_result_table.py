"""Result tables: Markdown and CSV round trips, stable columns, atomic writes, compare helpers."""

from __future__ import annotations

import numpy as np
import pytest

from meddiff.errors import InputError
from meddiff.metrics import evaluate_arrays, per_image_metrics
from meddiff.metrics.table import (
    MetricStats, TableRow, metric_columns, parse_markdown_table, read_csv, summarize, to_markdown, write_per_image_csv,
    write_table,
)

ROWS = [
    TableRow("Med-cDiff", {"ssim": MetricStats(0.8123456, 0.0123, 5), "psnr": MetricStats(27.123, 1.5, 5),
                            "lpips": MetricStats(0.1, 0.02, 5)}),
    TableRow("bicubic", {"psnr": MetricStats(25.0, 0.5, 5), "accutance": MetricStats(3.14159, 0.1, 5)}),
]


def test_columns_are_stable_known_first_then_first_seen():
    assert metric_columns(ROWS) == ["psnr", "ssim", "accutance", "lpips"]
    assert metric_columns(ROWS[::-1]) == ["psnr", "ssim", "accutance", "lpips"]


def test_markdown_cells_and_parse_round_trip():
    header, body = parse_markdown_table("intro text\n\n" + to_markdown(ROWS) + "\n- a note\n")
    assert header[:3] == ["method", "n", "PSNR (dB) ↑"] and header[-1] == "lpips"
    assert body[0] == ["Med-cDiff", "5", "27.12 ± 1.50", "0.8123 ± 0.0123", "", "0.1 ± 0.02"]
    assert body[1][0] == "bicubic" and body[1][4] == "3.14 ± 0.10"
    one = TableRow("x", {"psnr": MetricStats(30.0, 0.0, 1)})
    assert parse_markdown_table(to_markdown([one]))[1][0] == ["x", "1", "30.00"]  # no "± 0" for n = 1


def test_csv_round_trip_is_exact(tmp_path):
    md = write_table(ROWS, tmp_path / "r.md", tmp_path / "r.csv", notes=["R = 2"])
    assert (tmp_path / "r.md").read_text(encoding="utf-8") == md and md.endswith("- R = 2\n")
    back = read_csv(tmp_path / "r.csv")
    assert back == ROWS
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_read_csv_rejects_foreign_files(tmp_path):
    (tmp_path / "x.csv").write_text("name,value\na,1\n")
    with pytest.raises(InputError, match=r"x.csv: expected columns 'method, n"):
        read_csv(tmp_path / "x.csv")
    with pytest.raises(InputError, match="no Markdown pipe table"):
        parse_markdown_table("just text")


def test_evaluate_arrays_rows_follow_method_order_and_values():
    t = [np.zeros((16, 16)), np.ones((16, 16)) * 0.5]
    for i in range(2):
        t[i][:, 8:] += 0.3
    preds = {"good": [x + 0.01 for x in t], "bad": [x + 0.1 for x in t]}
    rows = evaluate_arrays(preds, t, 2.0)
    assert [r.method for r in rows] == ["good", "bad"] and rows[0].n == 2
    assert rows[0].metrics["psnr"].mean == pytest.approx(10 * np.log10(4 / 1e-4))
    assert rows[0].metrics["psnr"].mean > rows[1].metrics["psnr"].mean
    assert list(rows[0].metrics) == ["psnr", "ssim", "accutance", "gradient_ratio"]


def test_per_image_records_and_csv(tmp_path):
    t = [np.linspace(-1, 1, 256).reshape(16, 16)]
    recs = per_image_metrics({"a": [t[0] * 0.9]}, t, 2.0, names=["case1"])
    assert recs[0]["method"] == "a" and recs[0]["image"] == "case1"
    write_per_image_csv(tmp_path / "p.csv", recs)
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert lines[0] == "method,image,psnr,ssim,accutance,gradient_ratio"
    assert float(lines[1].split(",")[2]) == recs[0]["psnr"]
    assert summarize("a", recs).metrics["psnr"].mean == recs[0]["psnr"]


def test_compare_errors_name_the_problem():
    t = [np.zeros((16, 16))]
    with pytest.raises(InputError, match=r"m / 0: prediction shape \(16, 15\) differs from ground-truth shape \(16, 16\)"):
        evaluate_arrays({"m": [np.zeros((16, 15))]}, t, 2.0)
    bad = np.zeros((16, 16))
    bad[3, 4] = np.nan
    with pytest.raises(InputError, match="m / 0: prediction has 1 NaN"):
        evaluate_arrays({"m": [bad]}, t, 2.0)
    with pytest.raises(InputError, match="method 'm' has 2 images, ground truth has 1"):
        evaluate_arrays({"m": [bad, bad]}, t, 2.0)
