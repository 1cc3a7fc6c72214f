"""DICOM reading on real files: rescale, MONOCHROME1, geometry, multi-frame, series sorting."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut

from meddiff.io import find_images, read_volume
from meddiff.io.geometry import LPS_TO_RAS


def _ras(lps) -> np.ndarray:
    return (LPS_TO_RAS[:3, :3] @ np.asarray(lps, float))


def test_ct_rescale_matches_pydicom_modality_lut(ct_small):
    ds = pydicom.dcmread(ct_small)
    vol = read_volume(ct_small)
    np.testing.assert_array_equal(vol.array, apply_modality_lut(ds.pixel_array, ds).astype(np.float32))
    assert vol.meta["units"] == "HU" and vol.patient_id == "1CT1" and vol.array.dtype == np.float32
    assert vol.spacing == pytest.approx([float(s) for s in ds.PixelSpacing])


def test_nontrivial_slope_and_oblique_geometry(mr2_oblique):
    ds = pydicom.dcmread(mr2_oblique)
    vol = read_volume(mr2_oblique)
    np.testing.assert_allclose(vol.array, apply_modality_lut(ds.pixel_array, ds), rtol=1e-6)
    iop, ipp = np.array(ds.ImageOrientationPatient, float), np.array(ds.ImagePositionPatient, float)
    dy, dx = (float(s) for s in ds.PixelSpacing)
    y, x = 7, 11  # voxel (row 7, column 11): ipp + x*dx*row_cosine + y*dy*column_cosine (PS3.3 C.7.6.2.1.1)
    expected = _ras(ipp + x * dx * iop[:3] + y * dy * iop[3:])
    np.testing.assert_allclose((vol.affine @ [y, x, 0, 1])[:3], expected, atol=1e-6)


def test_monochrome1_is_inverted(rg1_mono1):
    ds = pydicom.dcmread(rg1_mono1)
    vol = read_volume(rg1_mono1)
    assert ds.PhotometricInterpretation == "MONOCHROME1" and vol.meta["monochrome1_inverted"]
    top = 2 ** int(ds.BitsStored) - 1
    assert vol.meta["inversion_sum"] == top
    np.testing.assert_array_equal(vol.array, (top - apply_modality_lut(ds.pixel_array, ds)).astype(np.float32))
    assert vol.spacing == (1.0, 1.0) and "none" in vol.meta["spacing_source"]  # PixelSpacing is 0\0 here


def test_multiframe_is_3d(emri_small):
    ds = pydicom.dcmread(emri_small)
    vol = read_volume(emri_small)
    assert vol.shape == (int(ds.NumberOfFrames), ds.Rows, ds.Columns)
    np.testing.assert_array_equal(vol.array, ds.pixel_array.astype(np.float32))


def test_series_in_shuffled_files_reads_back_sorted(tmp_path, emri_small, mr_small, series_maker):
    frames = pydicom.dcmread(emri_small).pixel_array  # real MR frames [10, 64, 64]
    geo = series_maker(tmp_path / "pat7" / "series", frames, mr_small, dz=2.5)
    vol = read_volume(tmp_path / "pat7" / "series")
    np.testing.assert_array_equal(vol.array, frames.astype(np.float32))
    assert vol.spacing == pytest.approx((2.5, 0.3125, 0.3125), abs=1e-4)
    o = geo["orientation"]
    for z, y, x in [(0, 0, 0), (9, 5, 3), (4, 63, 1)]:
        lps = geo["origin"] + z * 2.5 * geo["normal"] + x * 0.3125 * o[:3] + y * 0.3125 * o[3:]
        np.testing.assert_allclose((vol.affine @ [z, y, x, 1])[:3], _ras(lps), atol=1e-3)
    assert vol.meta["slice_order"] == "ImagePositionPatient" and vol.meta["n_files"] == 10


def test_series_without_positions_sorted_by_instance_number(tmp_path, emri_small, mr_small, series_maker):
    frames = pydicom.dcmread(emri_small).pixel_array
    series_maker(tmp_path / "s", frames, mr_small, with_positions=False, seed=3)
    vol = read_volume(tmp_path / "s")
    np.testing.assert_array_equal(vol.array, frames.astype(np.float32))
    assert vol.meta["slice_order"] == "InstanceNumber"


def test_find_images_groups_series_and_names_patients(tmp_path, emri_small, mr_small, ct_small, colin_nifti, series_maker):
    frames = pydicom.dcmread(emri_small).pixel_array[:4]
    series_maker(tmp_path / "pat7" / "series", frames, mr_small)
    (tmp_path / "pat8").mkdir()
    (tmp_path / "pat8" / "IMG0001").write_bytes(ct_small.read_bytes())  # no extension, DICM preamble
    (tmp_path / "pat8" / "notes.txt").write_text("not an image")
    (tmp_path / "case9.nii.gz").write_bytes(colin_nifti.read_bytes())
    items = find_images(tmp_path)
    assert [(it.patient_id, it.kind, len(it.files)) for it in items] == [
        ("case9", "nifti", 1), ("pat7", "dicom_series", 4), ("pat8", "dicom", 1)]
    by_file = {it.kind: it.patient_id for it in find_images(tmp_path, patient_from="file")}
    assert by_file == {"nifti": "case9", "dicom_series": "4MR1", "dicom": "1CT1"}
    vol = read_volume(items[1])
    assert vol.shape == (4, 64, 64) and vol.patient_id == "pat7"
    assert read_volume(items[2], patient_id="override").patient_id == "override"


def test_enhanced_multiframe_uses_functional_groups(emri_small):
    path = emri_small.parent / "eCT_Supplemental.dcm"
    if not path.exists():
        pytest.skip(f"{path} not present")
    ds = pydicom.dcmread(path)
    shared = ds.SharedFunctionalGroupsSequence[0]
    pvt = shared.PixelValueTransformationSequence[0]
    vol = read_volume(path)
    expected = ds.pixel_array * float(pvt.RescaleSlope) + float(pvt.RescaleIntercept)
    pos = [np.array(g.PlanePositionSequence[0].ImagePositionPatient, float) for g in ds.PerFrameFunctionalGroupsSequence]
    iop = np.array(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float)
    order = np.argsort([p @ np.cross(iop[:3], iop[3:]) for p in pos])  # sorted along the slice normal
    np.testing.assert_array_equal(vol.array, expected[order].astype(np.float32))
    assert list(order) == [1, 0]  # normal is -z here, so the file's frames come back reversed
    assert vol.spacing[0] == pytest.approx(float(np.linalg.norm(pos[1] - pos[0])))
    np.testing.assert_allclose((vol.affine @ [1, 0, 0, 1])[:3], _ras(pos[order[1]]), atol=1e-4)
    assert vol.meta["units"] == "HU"
