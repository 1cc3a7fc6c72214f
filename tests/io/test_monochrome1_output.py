"""A MONOCHROME1 radiograph comes out as MONOCHROME1, in its own stored units."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from meddiff.cli import main


def _rg1_crop(folder: Path) -> Path:
    data = pytest.importorskip("pydicom.data")
    try:
        src = data.get_testdata_file("RG1_UNCR.dcm")
    except Exception:  # pydicom-data not installed
        src = None
    if src is None:
        pytest.skip("pydicom-data's RG1_UNCR.dcm is not installed")
    ds = pydicom.dcmread(src)
    assert ds.PhotometricInterpretation == "MONOCHROME1" and int(ds.BitsStored) == 15
    crop = ds.pixel_array[900:964, 800:864].copy()
    ds.PixelData, (ds.Rows, ds.Columns) = crop.tobytes(), crop.shape
    folder.mkdir()
    ds.save_as(folder / "rg1.dcm")
    return folder / "rg1.dcm"


def test_a_monochrome1_film_is_written_back_in_its_own_values_and_photometric(tmp_path, capsys):
    src = _rg1_crop(tmp_path / "in")
    assert main(["sample", "--method", "median", "-i", str(src.parent), "-o", str(tmp_path / "out"), "--no-progress"]) == 0
    out = pydicom.dcmread(tmp_path / "out" / "rg1_restored.dcm")
    assert out.PhotometricInterpretation == "MONOCHROME1" and int(out.BitsStored) == 15  # the source's depth
    values = out.pixel_array * float(out.RescaleSlope) + float(out.RescaleIntercept)
    source = pydicom.dcmread(src).pixel_array.astype(np.float64)
    # a 3x3 median of the source's own values: same units and sense (bright stays bright), not inverted
    from scipy.ndimage import median_filter
    expected = median_filter(source, size=3, mode="reflect")
    inner = (slice(2, -2), slice(2, -2))
    assert np.corrcoef(values[inner].ravel(), expected[inner].ravel())[0, 1] > 0.99
    assert abs(values.mean() - source.mean()) < 0.02 * (source.max() - source.min())
    assert source.min() - 1 <= values.min() and values.max() <= source.max() + 1
