"""Derived DICOM written as viewers expect: own IOD, references, frame of reference, acquisition
parameters, window, each slice's own position (also after in-plane super-resolution), source
thickness, unknown spacing said, provenance; read back with pydicom and SimpleITK."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import CTImageStorage, MRImageStorage, SecondaryCaptureImageStorage, generate_uid

from meddiff.io import read_volume, write_volume
from meddiff.io.dicom_header import UIDMap
from meddiff.io.geometry import LPS_TO_RAS

GAPS = (0.0, 5.0, 10.05, 15.0, 20.1)  # mm along the normal: uneven, as on a real GE series


def _uneven_series(folder: Path, emri_small: Path, mr_small: Path) -> list[Path]:
    """5 real MR frames as single-frame MR files at uneven positions (axial, origin (-20, 30, 40))."""
    folder.mkdir(parents=True)
    frames = pydicom.dcmread(emri_small).pixel_array[:5]
    ds0 = pydicom.dcmread(mr_small)
    series, paths = generate_uid(), []
    for k, z in enumerate(GAPS):
        ds = copy.deepcopy(ds0)
        ds.SeriesInstanceUID, ds.SOPInstanceUID = series, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-20.0, 30.0, 40.0 + z]
        ds.InstanceNumber = k + 1
        ds.PixelRepresentation, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 0, 16, 16, 15
        ds.PixelData = frames[k].astype("<u2").tobytes()
        paths.append(folder / f"s{k}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    return paths


def _all_uids(ds: pydicom.Dataset) -> set[str]:
    out = set()
    ds.walk(lambda _, elem: out.add(str(elem.value)) if elem.VR == "UI" and elem.value else None)
    return out


def test_mr_series_kept_uids_references_positions_and_acquisition(tmp_path, emri_small, mr_small):
    paths = _uneven_series(tmp_path / "in", emri_small, mr_small)
    src = [pydicom.dcmread(p) for p in paths]
    vol = read_volume(tmp_path / "in")
    files = write_volume(vol.with_array(vol.array * 0.5), tmp_path / "out", reference=vol, keep_patient_tags=True,
                         provenance={"checkpoint_sha256": "ab" * 32, "sampler": "ddim", "steps": 7, "seed": 3})
    out = [pydicom.dcmread(f) for f in files]
    for k, (ds, s) in enumerate(zip(out, src)):
        assert ds.SOPClassUID == MRImageStorage and list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
        assert ds.FrameOfReferenceUID == s.FrameOfReferenceUID and ds.StudyInstanceUID == s.StudyInstanceUID
        assert ds.SeriesInstanceUID != s.SeriesInstanceUID
        (item,) = ds.SourceImageSequence
        assert item.ReferencedSOPInstanceUID == s.SOPInstanceUID and item.ReferencedSOPClassUID == s.SOPClassUID
        assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == s.SeriesInstanceUID
        assert len(ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence) == 5
        np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], [float(v) for v in s.ImagePositionPatient], atol=1e-4)
        assert float(ds.SliceThickness) == float(s.SliceThickness) == 0.8  # the acquisition's, not the 5 mm gap
        for tag in ("EchoTime", "RepetitionTime", "ScanningSequence", "PatientPosition"):
            assert ds[tag].value == s[tag].value, tag
        assert (float(ds.WindowCenter), float(ds.WindowWidth)) == (600.0, 1600.0)
    desc = out[0].ContributingEquipmentSequence[0]
    assert desc.Manufacturer == "meddiff" and "checkpoint_sha256=" + "ab" * 32 in desc.ContributionDescription
    assert "sampler=ddim" in desc.ContributionDescription and "seed=3" in desc.ContributionDescription
    sidecar = json.loads((tmp_path / "out.json").read_text())
    assert sidecar["steps"] == 7 and sidecar["meddiff_version"] and "command" in sidecar and len(sidecar["files"]) == 5
    back = read_volume(tmp_path / "out")
    assert back.meta["slice_gaps_mm"] == pytest.approx(np.diff(GAPS), abs=1e-4)  # uneven positions survive
    np.testing.assert_allclose(back.array, vol.array * 0.5, atol=float(out[0].RealWorldValueMappingSequence[0].RealWorldValueSlope) / 2 + 1e-4)


def test_deidentified_run_remaps_uids_consistently(tmp_path, emri_small, mr_small):
    paths = _uneven_series(tmp_path / "in", emri_small, mr_small)
    src = [pydicom.dcmread(p) for p in paths]
    vol = read_volume(tmp_path / "in")
    run = UIDMap()
    a = [pydicom.dcmread(f) for f in write_volume(vol, tmp_path / "mean", uid_map=run, provenance={"seed": 1})]
    b = [pydicom.dcmread(f) for f in write_volume(vol, tmp_path / "std", uid_map=run)]
    other = pydicom.dcmread(write_volume(vol, tmp_path / "other", uid_map=UIDMap())[0])
    assert a[0].FrameOfReferenceUID == b[0].FrameOfReferenceUID != src[0].FrameOfReferenceUID
    assert a[0].StudyInstanceUID == b[0].StudyInstanceUID != other.StudyInstanceUID
    assert a[0].SeriesInstanceUID != b[0].SeriesInstanceUID
    assert [d.SourceImageSequence[0].ReferencedSOPInstanceUID for d in a] == [run(s.SOPInstanceUID) for s in src]
    original = set().union(*(_all_uids(s) for s in src)) - {s.SOPClassUID for s in src} - {src[0].file_meta.TransferSyntaxUID}
    for ds in a + b:
        assert not (_all_uids(ds) & original)  # no source UID left anywhere, sequences included
        assert ds.PatientIdentityRemoved == "YES" and str(ds.PatientName) == ""
        text = ds.ContributingEquipmentSequence[0].ContributionDescription
        assert "meddiff_version=" in text and "command=" not in text and str(tmp_path) not in text  # no paths inside
    assert "command" in json.loads((tmp_path / "mean.json").read_text())  # the sidecar keeps the command line


def test_in_plane_sr_shifts_each_slice_position_by_half_a_pixel(tmp_path, emri_small, mr_small):
    """x2 in-plane: first pixel centre moves by (new - old spacing) / 2 along rows and columns; each
    slice keeps its own (uneven) through-plane position."""
    paths = _uneven_series(tmp_path / "in", emri_small, mr_small)
    src = [pydicom.dcmread(p) for p in paths]
    vol = read_volume(tmp_path / "in")
    old = 0.3125
    scale = np.diag([1.0, 0.5, 0.5, 1.0])
    scale[1:3, 3] = (0.5 - 1) / 2  # new index j sits at old index (j + 0.5) / 2 - 0.5
    up = np.kron(vol.array, np.ones((1, 2, 2), np.float32))
    sr = type(vol)(up, (vol.spacing[0], old / 2, old / 2), vol.affine @ scale, vol.patient_id, vol.source, vol.meta)
    files = write_volume(sr, tmp_path / "sr")
    for ds, s in zip((pydicom.dcmread(f) for f in files), src):
        expected = np.asarray([float(v) for v in s.ImagePositionPatient]) + (old / 2 - old) / 2 * np.array([1.0, 1.0, 0.0])
        np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], expected, atol=1e-4)
        assert [float(v) for v in ds.PixelSpacing] == [old / 2, old / 2] and (ds.Rows, ds.Columns) == (128, 128)


def test_simpleitk_reads_the_series_like_the_source(tmp_path, emri_small, mr_small):
    sitk = pytest.importorskip("SimpleITK")
    _uneven_series(tmp_path / "in", emri_small, mr_small)
    vol = read_volume(tmp_path / "in")
    write_volume(vol, tmp_path / "out", reference=vol, synthetic=False)
    images = {}
    for name in ("in", "out"):
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path / name)))
        images[name] = reader.Execute()
    a, b = images["in"], images["out"]
    np.testing.assert_array_equal(sitk.GetArrayFromImage(b), sitk.GetArrayFromImage(a))
    np.testing.assert_allclose(b.GetOrigin(), a.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(b.GetSpacing(), a.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(b.GetDirection(), a.GetDirection(), atol=1e-6)
    # meddiff's affine agrees with SimpleITK's geometry (LPS origin, first slice)
    np.testing.assert_allclose(LPS_TO_RAS[:3, :3] @ np.asarray(b.GetOrigin()), vol.affine[:3, 3], atol=1e-4)


def test_ct_keeps_iod_kvp_and_hu(tmp_path, ct_small):
    src = pydicom.dcmread(ct_small)
    vol = read_volume(ct_small)
    (out,) = write_volume(vol, tmp_path / "ct.dcm")
    ds = pydicom.dcmread(out)
    assert ds.SOPClassUID == CTImageStorage and ds.KVP == src.KVP and ds.RescaleType == "HU"
    assert float(ds.SliceThickness) == float(src.SliceThickness)
    np.testing.assert_array_equal(read_volume(out).array, vol.array)


def test_unknown_spacing_is_said_not_invented(tmp_path, rg1_mono1):
    vol = read_volume(rg1_mono1)  # PixelSpacing 0\0 in the source
    crop = dataclasses.replace(vol, array=vol.array[:40, :50].copy())
    (out,) = write_volume(crop, tmp_path / "cr.dcm")
    ds = pydicom.dcmread(out)
    assert "PixelSpacing" not in ds and "unknown pixel spacing" in ds.ImageComments
    assert ds.SOPClassUID == SecondaryCaptureImageStorage and ds.Modality == "CR"
    assert read_volume(out).meta["spacing_source"].startswith("none")
