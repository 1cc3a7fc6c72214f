"""PHI, round two (issue 28 P1-P3, de-identified headers): degrade's truth is not the original file, burned-in
annotation is carried (and said), error messages carry no PatientID, one pseudonym per patient, distinct
SeriesNumbers, descriptions that fit LO and keep the method."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from meddiff.cli import main
from meddiff.io import Volume, read_volume, write_volume
from meddiff.io.dicom_header import fit_lo

CT = Path(get_testdata_file("CT_small.dcm"))


def _dicom(path: Path, **tags) -> Path:
    ds = pydicom.dcmread(CT)
    for k, v in tags.items():
        setattr(ds, k, v)
    ds.add_new(0x00091010, "LO", "private secret")
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path)
    return path


def _all_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def test_degrade_truth_is_rewritten_de_identified(tmp_path):
    src = _dicom(tmp_path / "in" / "a.dcm", PatientID="PID-99887766", PatientName="Doe^Jane")
    assert main(["degrade", "-i", str(src.parent), "-o", str(tmp_path / "pairs"), "--task", "sr", "--factor", "2"]) == 0
    (truth,) = sorted((tmp_path / "pairs" / "truth").rglob("*.dcm"))
    assert truth.read_bytes() != src.read_bytes()
    blob = _all_bytes(tmp_path / "pairs")
    orig = pydicom.dcmread(src)
    for secret in (b"PID-99887766", b"Doe^Jane", b"private secret", orig.SOPInstanceUID.encode(), orig.StudyInstanceUID.encode()):
        assert secret not in blob, secret
    np.testing.assert_array_equal(read_volume(truth).array, read_volume(src).array)  # the same values


def test_burned_in_annotation_is_carried_and_said(tmp_path, caplog):
    src = _dicom(tmp_path / "b.dcm", BurnedInAnnotation="YES")
    assert main(["sample", "--method", "median", "-i", str(src), "-o", str(tmp_path / "o"), "--no-progress"]) == 0
    (f,) = sorted((tmp_path / "o").rglob("*.dcm"))
    ds = pydicom.dcmread(f)
    assert ds.BurnedInAnnotation == "YES" and ds.PatientIdentityRemoved == "NO"
    assert "NOT removed" in ds.ImageComments and "burned" in caplog.text.lower()
    plain = _dicom(tmp_path / "n.dcm", BurnedInAnnotation="NO")
    assert main(["sample", "--method", "median", "-i", str(plain), "-o", str(tmp_path / "p"), "--no-progress"]) == 0
    (g,) = sorted((tmp_path / "p").rglob("*.dcm"))
    assert pydicom.dcmread(g).BurnedInAnnotation == "NO" and pydicom.dcmread(g).PatientIdentityRemoved == "YES"


def test_constant_image_error_names_the_file_not_the_patient(tmp_path, capsys):
    ds = pydicom.dcmread(CT)
    ds.PatientID = "PID-99887766"
    ds.PixelData = np.full((ds.Rows, ds.Columns), 7, "<i2").tobytes()
    ds.save_as(tmp_path / "flat.dcm")
    assert main(["sample", "--method", "median", "-i", str(tmp_path / "flat.dcm"), "-o", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "flat.dcm" in err and "PID-99887766" not in err and "percentiles None" not in err
    assert not (tmp_path / "o").exists()


def test_one_pseudonym_per_patient_and_distinct_series_numbers(tmp_path):
    folder = tmp_path / "in"
    for k, pid in enumerate(("A1", "A1", "B2")):
        _dicom(folder / f"s{k}" / "x.dcm", PatientID=pid, SeriesInstanceUID=pydicom.uid.generate_uid())
    assert main(["sample", "--method", "median", "-i", str(folder), "-o", str(tmp_path / "o"), "--no-progress"]) == 0
    files = sorted((tmp_path / "o").rglob("*.dcm"))
    ids = [str(pydicom.dcmread(f).PatientID) for f in files]
    assert len(files) == 3 and ids[0] == ids[1] != ids[2] and not {"A1", "B2", "meddiff"} & set(ids)
    numbers = [int(pydicom.dcmread(f).SeriesNumber) for f in files]
    assert len(set(numbers)) == 3


def test_series_description_fits_and_keeps_the_method(tmp_path):
    long = "meddiff sr (restored); OUT OF THE MODEL'S DOMAIN: pixel spacing 0.2 mm is far below the training range 0.9-1.1 mm"
    assert fit_lo(long) == "meddiff sr (restored); ..." and len(fit_lo("x " * 100)) <= 64
    v = Volume(np.arange(64, dtype=np.float32).reshape(8, 8), (1.0, 1.0), np.eye(4), "p", tmp_path / "s.nii.gz", {})
    (f,) = write_volume(v, tmp_path / "o.dcm", description=long)
    ds = pydicom.dcmread(f)
    assert ds.SeriesDescription == "meddiff sr (restored); ..." and "0.9-1.1 mm" in ds.ImageComments


# --------------------------------------------------------------------------- silent wrong results (S1, S3, S5)


def test_uneven_slices_keep_their_positions(tmp_path):
    """S1: slices at z = 0, 5, 25 mm come back at 0, 5, 25, with no SpacingBetweenSlices."""
    mr = Path(get_testdata_file("MR_small.dcm"))
    folder = tmp_path / "uneven"
    folder.mkdir()
    uid = pydicom.uid.generate_uid()
    for k, z in enumerate((0.0, 5.0, 25.0)):
        ds = pydicom.dcmread(mr)
        ds.SeriesInstanceUID, ds.SOPInstanceUID = uid, pydicom.uid.generate_uid()
        ds.ImagePositionPatient, ds.ImageOrientationPatient, ds.InstanceNumber = [0.0, 0.0, z], [1, 0, 0, 0, 1, 0], k + 1
        ds.save_as(folder / f"s{k}.dcm")
    assert main(["sample", "--method", "median", "-i", str(folder), "-o", str(tmp_path / "o"), "--no-progress"]) == 0
    files = sorted((tmp_path / "o").rglob("*.dcm"))
    got = sorted(float(pydicom.dcmread(f).ImagePositionPatient[2]) for f in files)
    assert got == [0.0, 5.0, 25.0]
    assert all("SpacingBetweenSlices" not in pydicom.dcmread(f) for f in files)


def test_multipage_gray_tiff_stays_pages(tmp_path):
    """S3: a 3-page gray TIFF volume is written back as 3 gray pages (not one RGB page) and reads back the same."""
    import tifffile

    vol = (np.arange(3 * 16 * 16).reshape(3, 16, 16) % 200).astype(np.uint16)
    tifffile.imwrite(tmp_path / "v.tif", vol, photometric="minisblack")
    v = read_volume(tmp_path / "v.tif")
    (out,) = write_volume(v, tmp_path / "back.tif")
    with tifffile.TiffFile(out) as tif:
        assert len(tif.pages) == 3 and tif.pages[0].photometric == tifffile.PHOTOMETRIC.MINISBLACK
    np.testing.assert_array_equal(read_volume(out).array, v.array)


def test_npz_spacing_survives_sample(tmp_path):
    """S5: an .npz input with spacing is written as .npz with that spacing."""
    np.savez(tmp_path / "a.npz", image=np.random.default_rng(0).random((16, 16)), spacing=np.array([0.7, 0.3]))
    assert main(["sample", "--method", "median", "-i", str(tmp_path / "a.npz"), "-o", str(tmp_path / "o"), "--no-progress"]) == 0
    (out,) = sorted((tmp_path / "o").glob("*.np*"))
    assert out.suffix == ".npz"
    np.testing.assert_allclose(np.load(out)["spacing"], [0.7, 0.3])
