"""The HTML report page (Jinja2 template): banner, units of the window, footnotes, escaping."""

from __future__ import annotations

import numpy as np

from meddiff.metrics.report import BANNER, write_html_report


def _write(tmp_path, **kw):
    truth = np.linspace(0, 400, 64, dtype=np.float32).reshape(8, 8)
    rows = [{"model": truth * 0.9, "truth": truth}]
    return write_html_report(tmp_path / "r.html", title="t", rows_of_images=rows, window=(0.0, 400.0), **kw).read_text()


def test_banner_units_and_footnotes(tmp_path):
    text = _write(tmp_path, units="HU", footnotes=["PSNR = 10 log10(R² / MSE) <x>"], notes=["plain words [1]"])
    assert f'<p class="banner" role="note">{BANNER}</p>' in text and "not for diagnosis" in BANNER
    assert "level 200, width 400 ([0, 400] HU)" in text  # window/level in the image's own units
    assert "How the numbers are computed" in text and "<li>PSNR = 10 log10(R² / MSE) &lt;x&gt;</li>" in text
    assert text.index("plain words") < text.index("How the numbers are computed")  # formulas after the words
    assert 'class="scroll"' in text  # wide grids scroll instead of being cut off


def test_banner_can_be_dropped_and_no_footnotes_section(tmp_path):
    text = _write(tmp_path, banner=None)
    assert 'class="banner"' not in text and "How the numbers are computed" not in text
