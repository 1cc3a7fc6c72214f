"""write_volume round trips: NIfTI geometry, DICOM geometry/values/UIDs/markers/privacy, PNG."""

from __future__ import annotations

import dataclasses

import numpy as np
import pydicom
import pytest

from meddiff.errors import InputError
from meddiff.io import read_volume, write_volume
from meddiff.io.dicom_write import MARKER_SYNTHETIC
from meddiff.io.volume import Volume


def _oblique_subvolume(path, z0=80, nz=6) -> Volume:
    """A real brain sub-volume with an oblique, translated affine and non-integer values."""
    vol = read_volume(path)
    c, s = np.cos(0.3), np.sin(0.3)
    rot = np.eye(4)
    rot[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    affine = rot @ vol.affine
    affine[:, 3] = affine @ [z0, 0, 0, 1]
    arr = vol.array[z0:z0 + nz, ::4, ::4] * 1.7 - 40.25
    affine[:, 1:3] *= 4
    return dataclasses.replace(vol, array=np.ascontiguousarray(arr, np.float32), affine=affine,
                               spacing=(vol.spacing[0], 4 * vol.spacing[1], 4 * vol.spacing[2]))


def test_nifti_round_trip_keeps_affine_and_values(tmp_path, colin_nifti):
    vol = _oblique_subvolume(colin_nifti)
    (out,) = write_volume(vol, tmp_path / "x.nii.gz")
    back = read_volume(out)
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-5)
    assert back.spacing == pytest.approx(vol.spacing)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json", "x.nii.gz"]  # no temporary left behind


def test_dicom_series_round_trip_geometry_values_and_marking(tmp_path, colin_nifti):
    vol = _oblique_subvolume(colin_nifti)
    files = write_volume(vol, tmp_path / "out.dcm", description="sr x4 case 3")
    assert [f.name for f in files] == [f"IM_{k:04d}.dcm" for k in range(1, 7)] and files[0].parent.name == "out"
    back = read_volume(tmp_path / "out")
    slope = (vol.array.max() - vol.array.min()) / 65535
    assert np.abs(back.array - vol.array).max() <= slope / 2 + 1e-4
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-4)
    ds = pydicom.dcmread(files[0])
    assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert ds.DerivationDescription == MARKER_SYNTHETIC and MARKER_SYNTHETIC in ds.ImageComments
    assert ds.BurnedInAnnotation == "NO" and ds.SeriesDescription == "sr x4 case 3"
    uids = {pydicom.dcmread(f).SOPInstanceUID for f in files}
    assert len(uids) == 6 and len({pydicom.dcmread(f).SeriesInstanceUID for f in files}) == 1


def test_dicom_2d_with_reference_exact_new_uids_no_patient(tmp_path, ct_small):
    ref = read_volume(ct_small)
    src = pydicom.dcmread(ct_small)
    (out,) = write_volume(ref.with_array(ref.array), tmp_path / "ct.dcm", reference=ref)
    back = read_volume(out)
    np.testing.assert_array_equal(back.array, ref.array)  # integer HU: stored exactly
    np.testing.assert_allclose(back.affine, ref.affine, atol=1e-5)
    ds = pydicom.dcmread(out)
    for uid in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        assert ds[uid].value != src[uid].value
    assert str(ds.PatientName) == "" and ds.PatientID != src.PatientID and ds.PatientIdentityRemoved == "YES"
    assert "InstitutionName" in src and "InstitutionName" not in ds and ds.ReferringPhysicianName == ""
    assert ds.Modality == "CT" and ds.RescaleType == "HU"
    np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], [float(v) for v in src.ImagePositionPatient], atol=1e-4)
    (kept,) = write_volume(ref, tmp_path / "kept.dcm", reference=ref, keep_patient_tags=True)
    ds = pydicom.dcmread(kept)
    assert ds.PatientID == src.PatientID and str(ds.PatientName) == str(src.PatientName)


def test_dicom_oblique_2d_orientation_round_trip(tmp_path, mr2_oblique):
    ref = read_volume(mr2_oblique)
    small = dataclasses.replace(ref, array=ref.array[:32, :48].copy())
    (out,) = write_volume(small, tmp_path / "mr.dcm")
    src, ds = pydicom.dcmread(mr2_oblique), pydicom.dcmread(out)
    np.testing.assert_allclose([float(v) for v in ds.ImageOrientationPatient], [float(v) for v in src.ImageOrientationPatient], atol=1e-6)
    back = read_volume(out)
    assert np.abs(back.array - small.array).max() <= float(ds.RealWorldValueMappingSequence[0].RealWorldValueSlope) / 2 + 1e-4


def test_png_16bit_round_trip_exact_and_3d_folder(tmp_path, ct_small, emri_small):
    vol = read_volume(ct_small)
    counts = vol.with_array(vol.array + 1024)  # integers 128..2191: stored as they are
    (out,) = write_volume(counts, tmp_path / "ct.png")
    np.testing.assert_array_equal(read_volume(out).array, counts.array)
    mr = read_volume(emri_small)
    files = write_volume(mr.with_array(mr.array * 0.5 + 0.1), tmp_path / "mr.png", bits=8)
    assert len(files) == 10 and files[0].parent.name == "mr"
    back = read_volume(files[4])
    assert np.abs(back.array - (mr.array[4] * 0.5 + 0.1)).max() <= (mr.array.max() * 0.5) / 255 / 2 + 1e-4


def test_existing_folder_needs_overwrite_and_shapes_must_match(tmp_path, emri_small, ct_small):
    mr = read_volume(emri_small)
    write_volume(mr, tmp_path / "s")
    with pytest.raises(InputError, match="already exists"):
        write_volume(mr, tmp_path / "s")
    files = write_volume(mr.with_array(mr.array + 1), tmp_path / "s", overwrite=True)
    assert read_volume(tmp_path / "s").array[0, 0, 0] == mr.array[0, 0, 0] + 1 and len(files) == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s", "s.json"]  # the series and its provenance
    with pytest.raises(InputError, match="reference .*CT_small.* shape"):
        write_volume(mr, tmp_path / "t.nii", reference=read_volume(ct_small))
    with pytest.raises(InputError, match="suffix '.jpg'"):
        write_volume(mr, tmp_path / "t.jpg")
