"""Same format out as in, with the input's real values; provenance beside every output."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from PIL import Image

from meddiff.cli import main
from meddiff.io import read_volume, write_volume


def _ct_counts(ct_small) -> np.ndarray:
    """A real CT slice as 16-bit counts (HU + 1024: 128..2191)."""
    return (read_volume(ct_small).array + 1024).astype(np.uint16)


def test_16bit_png_comes_back_in_its_own_counts(tmp_path, ct_small):
    counts = _ct_counts(ct_small)
    Image.fromarray(counts).save(tmp_path / "ct.png")
    vol = read_volume(tmp_path / "ct.png")
    processed = vol.with_array(vol.array * 0.9 + 50.3)  # a restoration's real-valued output
    (out,) = write_volume(processed, tmp_path / "out.png")
    im = Image.open(out)
    assert im.mode.startswith("I;16") and "meddiff_window" not in im.text
    stored = np.asarray(im)
    np.testing.assert_array_equal(stored, np.round(processed.array).astype(np.uint16))  # not stretched to 0..65535
    assert stored.max() < 2500


def test_int16_tiff_comes_back_as_int16_tiff(tmp_path, ct_small, emri_small):
    hu = read_volume(ct_small).array.astype(np.int16)  # negative values: air is about -1000 HU
    tifffile.imwrite(tmp_path / "ct.tif", hu)
    vol = read_volume(tmp_path / "ct.tif")
    (out,) = write_volume(vol.with_array(vol.array + 0.4), tmp_path / "ct_out.tif")
    back = tifffile.imread(out)
    assert back.dtype == np.int16 and back.min() < 0
    np.testing.assert_array_equal(back, hu)  # x + 0.4 rounds back to x
    mr = read_volume(emri_small).array.astype(np.uint16)
    tifffile.imwrite(tmp_path / "mr.tif", mr)
    (out3,) = write_volume(read_volume(tmp_path / "mr.tif"), tmp_path / "mr_out.tiff")
    assert tifffile.imread(out3).shape == mr.shape and tifffile.imread(out3).dtype == np.uint16


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_numpy_comes_back_as_numpy(tmp_path, ct_small, suffix):
    arr = read_volume(ct_small).array * 0.37
    vol = read_volume(ct_small).with_array(arr)
    (out,) = write_volume(vol, tmp_path / f"x{suffix}")
    assert out.suffix == suffix
    back = read_volume(out)
    np.testing.assert_array_equal(back.array, arr)
    if suffix == ".npz":
        assert back.spacing == pytest.approx(vol.spacing)


@pytest.mark.parametrize("name", ["ct.png", "ct.tif", "ct.npy"])
def test_sample_writes_the_input_format_with_provenance(tmp_path, ct_small, name):
    counts = _ct_counts(ct_small)
    inp = tmp_path / "in" / name
    inp.parent.mkdir()
    if name.endswith(".png"):
        Image.fromarray(counts).save(inp)
    elif name.endswith(".tif"):
        tifffile.imwrite(inp, counts.astype(np.int16))
    else:
        np.save(inp, counts.astype(np.float32))
    assert main(["sample", "--method", "median", "--input", str(inp), "--output", str(tmp_path / "out"), "--seed", "4"]) == 0
    images = [p for p in (tmp_path / "out").rglob("*") if p.is_file() and p.suffix != ".json"]
    (out,) = images
    assert out.suffix == inp.suffix
    back = read_volume(out).array
    assert back.min() >= counts.min() - 1 and back.max() <= counts.max() + 1  # the input's range, not stretched
    record = json.loads(out.with_name(out.name.split(".")[0] + ".json").read_text())
    assert record["method"] == "median" and record["seed"] == 4 and record["restoration"] == "median"
    assert record["meddiff_version"] and "sample" in record["command"] and record["source"].endswith(name)
