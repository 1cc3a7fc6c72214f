"""Every DICOM IOD meddiff writes passes dicom3tools' validator ``dciodvfy`` with 0 errors (and no
Modality LUT in an MR image): CT and MR Image Storage (single files, multi-slice series, a changed
pixel grid), Secondary Capture (CR, NIfTI and PNG sources), with and without patient tags.
Skipped when ``dciodvfy`` is not installed (Debian/Ubuntu: ``apt-get install dicom3tools``; CI
installs it). ``benchmarks/dciodvfy_outputs.py`` runs the same check over every DICOM file of
pydicom and pydicom-data.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from meddiff.cli import main
from meddiff.data.samples import samples_dir
from meddiff.io import read_volume as read_image

DCIODVFY = shutil.which("dciodvfy")
pytestmark = pytest.mark.skipif(DCIODVFY is None, reason="dicom3tools' dciodvfy is not installed")


def _problems(path: Path) -> list[str]:
    out = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (out.stderr + out.stdout).splitlines()
            if line.startswith("Error") or "Modality LUT" in line]


def _pydicom_data(name: str) -> Path:
    data_store = pytest.importorskip("data_store", reason="pydicom-data not installed")
    path = Path(data_store.__file__).parent / "data" / name
    if not path.exists():
        pytest.skip(f"{path} missing")
    return path


SOURCES = {
    "ct_small": lambda: Path(get_testdata_file("CT_small.dcm")),
    "mr_small": lambda: Path(get_testdata_file("MR_small.dcm")),
    "mr_series": lambda: _pydicom_data("emri_small.dcm"),  # 10-frame MR -> 10 files
    "cr_mono1": lambda: _pydicom_data("RG1_UNCR.dcm"),  # CR -> Secondary Capture
    "cr_extremity_right": lambda: _pydicom_data("RG3_UNCR.dcm"),  # Laterality R kept
    "mr_oblique": lambda: _pydicom_data("MR2_UNCR.dcm"),
    "nifti": lambda: samples_dir("colin27") / "colin27" / "axial.nii.gz",
}
VARIANTS = {
    "median": ["--method", "median"],
    "bicubic_x2": ["--method", "bicubic", "--sr-factor", "2"],
    "keep_patient_tags": ["--method", "median", "--keep-patient-tags"],
}


CASES = [(s, "median") for s in SOURCES] + [(s, "keep_patient_tags") for s in SOURCES if s != "nifti"] + [
    ("ct_small", "bicubic_x2"), ("mr_series", "bicubic_x2"), ("nifti", "bicubic_x2")]


@pytest.mark.parametrize(("source", "variant"), CASES)
def test_written_dicom_passes_dciodvfy(source, variant, tmp_path):
    src = SOURCES[source]()
    out = tmp_path / "out"
    assert main(["sample", *VARIANTS[variant], "-i", str(src), "-o", str(out), "--format", "dicom", "--no-progress"]) == 0
    files = sorted(out.rglob("*.dcm"))
    assert files
    for f in files:
        assert _problems(f) == [], (f.name, _problems(f))


def test_png_source_written_as_dicom_passes(tmp_path):
    from PIL import Image

    Image.fromarray((np.arange(32 * 32).reshape(32, 32) % 251).astype(np.uint8)).save(tmp_path / "a.png")
    assert main(["sample", "--method", "median", "-i", str(tmp_path / "a.png"), "-o", str(tmp_path / "o"),
                 "--format", "dicom", "--no-progress"]) == 0
    (f,) = sorted((tmp_path / "o").rglob("*.dcm"))
    assert _problems(f) == []


def test_source_attributes_carried(tmp_path):
    """ImageType value 3, Laterality and the MR value mapping: what the validator asks, kept from the source."""
    src = _pydicom_data("RG3_UNCR.dcm")
    assert main(["sample", "--method", "median", "-i", str(src), "-o", str(tmp_path / "o"), "--no-progress"]) == 0
    (f,) = sorted((tmp_path / "o").rglob("*.dcm"))
    assert str(pydicom.dcmread(f).Laterality).strip() == str(pydicom.dcmread(src).Laterality).strip() == "R"
    mr = Path(get_testdata_file("MR_small.dcm"))
    assert main(["sample", "--method", "median", "-i", str(mr), "-o", str(tmp_path / "m"), "--no-progress"]) == 0
    (f,) = sorted((tmp_path / "m").rglob("*.dcm"))
    ds = pydicom.dcmread(f)
    assert list(ds.ImageType) == ["DERIVED", "SECONDARY", "OTHER"] and "RescaleSlope" not in ds
    item = ds.RealWorldValueMappingSequence[0]
    back = read_image(f).array
    expected = ds.pixel_array * float(item.RealWorldValueSlope) + float(item.RealWorldValueIntercept)
    np.testing.assert_allclose(back.squeeze(), expected, rtol=1e-6)


def test_chest_radiograph_denoised_by_model_passes(tmp_path):
    """A 128 x 128 crop of pydicom-data's chest radiograph RG1_UNCR.dcm (CR, MONOCHROME1) denoised by the shipped
    xray_denoise model (one network call) and written as DICOM: 0 dciodvfy errors."""
    src = _pydicom_data("RG1_UNCR.dcm")
    ds = pydicom.dcmread(src)
    y0, x0 = (ds.Rows - 128) // 2, (ds.Columns - 128) // 2
    ds.PixelData = np.ascontiguousarray(ds.pixel_array[y0:y0 + 128, x0:x0 + 128]).tobytes()
    ds.Rows, ds.Columns = 128, 128
    ds.save_as(tmp_path / "crop.dcm")
    assert main(["sample", "--checkpoint", "xray_denoise", "-i", str(tmp_path / "crop.dcm"), "-o", str(tmp_path / "o"),
                 "--format", "dicom", "--no-progress"]) == 0
    (f,) = sorted((tmp_path / "o").rglob("*.dcm"))
    out = pydicom.dcmread(f)
    assert (out.Rows, out.Columns) == (128, 128) and out.PhotometricInterpretation == ds.PhotometricInterpretation
    assert _problems(f) == []
