"""HTML report: self-contained (embedded PNGs decode to the right images), table, notes, atomic write."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

from meddiff.errors import InputError
from meddiff.metrics.report import write_html_report
from meddiff.metrics.table import MetricStats, TableRow


def _rows():
    y, x = np.mgrid[:16, :16] / 15.0
    truth = 2 * x - 1  # ramp from -1 to 1
    return [{"truth": truth, "bicubic": truth * 0.5, "Med-cDiff": truth}]


def _pngs(text: str) -> list[Image.Image]:
    return [Image.open(io.BytesIO(base64.b64decode(b))) for b in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)]


def test_report_embeds_images_table_and_notes(tmp_path):
    rows = [TableRow("Med-cDiff", {"psnr": MetricStats(31.5, 0.25, 4)})]
    out = write_html_report(tmp_path / "r" / "report.html", title="SR <x4>", rows_of_images=_rows(), row_labels=["case 1"],
                            table_rows=rows, notes=["trained 5 min & tested on Colin27"])
    text = out.read_text(encoding="utf-8")
    assert out == tmp_path / "r" / "report.html"
    assert "<title>SR &lt;x4&gt;</title>" in text and "http" not in text  # escaped, nothing fetched from the web
    assert "<td>Med-cDiff</td><td>4</td><td>31.50 ± 0.25</td>" in text
    assert "<li>trained 5 min &amp; tested on Colin27</li>" in text
    imgs = _pngs(text)
    assert len(imgs) == 3 + 3  # 3 grayscale images, 2 error maps + 1 colour bar
    gray = np.asarray(imgs[0])
    assert imgs[0].mode == "L" and gray.shape == (16, 16)
    assert gray[0, 0] == 0 and gray[0, -1] == 255  # fixed window [-1, 1]: -1 -> black, 1 -> white
    assert np.asarray(imgs[1])[0, 0] == 64  # bicubic = truth / 2: -0.5 -> 0.25 * 255, same window, no stretch
    err_perfect = np.asarray(imgs[5])  # Med-cDiff error map: zero error everywhere -> one colour
    assert imgs[5].mode == "RGB" and (err_perfect == err_perfect[0, 0]).all()
    assert not [p for p in (tmp_path / "r").iterdir() if p.name != "report.html"]  # atomic: no temp file left


def test_report_from_markdown_and_extra_images(tmp_path):
    png = tmp_path / "loss.png"
    Image.fromarray(np.zeros((5, 7), np.uint8)).save(png)
    md = "| method | n | PSNR |\n|---|---:|---:|\n| a | 1 | 20.00 |\n"
    text = write_html_report(tmp_path / "r.html", title="t", rows_of_images=[], table_markdown=md,
                             extra_images={"loss curve": png}).read_text()
    assert "<td>a</td><td>1</td><td>20.00</td>" in text and "<h2>loss curve</h2>" in text
    assert np.asarray(_pngs(text)[0]).shape == (5, 7)


def test_report_errors_are_named_and_leave_old_file(tmp_path):
    path = tmp_path / "r.html"
    path.write_text("old")
    bad = [{"truth": np.zeros((8, 8)), "x": np.zeros((8, 9))}]
    with pytest.raises(InputError, match=r"column 'x' has shape \(8, 9\), 'truth' has \(8, 8\)"):
        write_html_report(path, title="t", rows_of_images=bad)
    with pytest.raises(InputError, match="extra image 'c': file .*nope.png does not exist"):
        write_html_report(path, title="t", rows_of_images=[], extra_images={"c": tmp_path / "nope.png"})
    assert path.read_text() == "old"
