"""Tiny archives mixing DICOM series, NIfTI volumes and PNG images, and a comparison of output trees."""

from __future__ import annotations

import copy
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import generate_uid

PATIENT = "Doe^Jane"  # written into every DICOM file: must reach no output path or manifest
PATIENT_ID = "PID-7731"


def write_series(folder: Path, frames: np.ndarray, seed: int) -> None:
    """frames [Z, Y, X] (int16 HU + 1024) as single-frame CT files with positions 2.5 mm apart."""
    from pydicom.data import get_testdata_file

    folder.mkdir(parents=True, exist_ok=True)
    template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    uid = generate_uid(entropy_srcs=[f"series-{seed}"])
    for k, frame in enumerate(frames):
        ds = copy.deepcopy(template)
        ds.PatientName, ds.PatientID = PATIENT, PATIENT_ID
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[f"series-{seed}-{k}"])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0, 0, 2.5 * k]
        ds.InstanceNumber = k + 1
        ds.Rows, ds.Columns = frame.shape
        ds.PixelData = frame.astype("<i2").tobytes()
        ds.save_as(folder / f"im{k:02d}.dcm", enforce_file_format=True)


def make_archive(root: Path, units: int = 40, corrupt: bool = True, size: int = 16) -> Path:
    """`units` inputs under root/pNN/: DICOM series (3 slices; patient p00 has two series in one
    folder), NIfTI volumes (2 slices) and PNG images, size x size pixels, in turn; with `corrupt`
    the last is a truncated PNG."""
    rng = np.random.default_rng(0)
    for n in range(units):
        folder = root / f"p{n // 6:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        blob = np.zeros((size, size), np.float32)
        blob[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
        image = blob * rng.uniform(200, 800) + rng.normal(0, 20, (size, size))
        if corrupt and n == units - 1:
            (folder / f"broken{n}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
        elif n % 3 == 0:
            write_series(folder / f"series{n}", np.stack([image + 40 * k for k in range(3)]).astype(np.int16), n)
        elif n % 3 == 1:
            vol = np.stack([image, image[::-1]], -1).astype(np.float32)  # nibabel [X, Y, Z]: 2 slices
            nib.save(nib.Nifti1Image(vol, np.diag([1.2, 1.2, 3.0, 1.0])), folder / f"vol{n}.nii.gz")
        else:
            Image.fromarray(np.clip(image / 4, 0, 255).astype(np.uint8)).save(folder / f"img{n}.png")
    # two series in one folder: the outputs are told apart by '', '_2' (restore.files.unique_suffix)
    a = root / "p00" / "series0"
    second = root / "p00" / "series3"
    if second.is_dir():
        for f in sorted(second.iterdir()):
            f.rename(a / f"b_{f.name}")
        second.rmdir()
    return root


IMAGE_SUFFIXES = (".png", ".nii.gz", ".dcm")


def image_outputs(out: Path) -> dict[str, Path]:
    """Relative path -> file of every image meddiff wrote under `out` (no sidecars, manifests, hidden files)."""
    files = {}
    for p in sorted(out.rglob("*")):
        rel = p.relative_to(out)
        if p.is_file() and not any(part.startswith(".") for part in rel.parts) and p.name.endswith(IMAGE_SUFFIXES):
            files[rel.as_posix()] = p
    return files


def assert_same_images(a: Path, b: Path) -> int:
    """The same image files under a and b: PNG and NIfTI byte for byte, DICOM pixel data and geometry
    (DICOM files carry new UIDs and a creation time per run). Returns how many were compared."""
    fa, fb = image_outputs(a), image_outputs(b)
    assert sorted(fa) == sorted(fb)
    for rel in fa:
        if rel.endswith(".dcm"):
            da, db = pydicom.dcmread(fa[rel]), pydicom.dcmread(fb[rel])
            assert da.PixelData == db.PixelData and da.ImagePositionPatient == db.ImagePositionPatient, rel
        else:
            assert fa[rel].read_bytes() == fb[rel].read_bytes(), rel
    return len(fa)


@pytest.fixture(scope="session")
def archive40(tmp_path_factory) -> Path:
    return make_archive(tmp_path_factory.mktemp("archive40") / "in", 40)


@pytest.fixture(scope="session")
def archive10(tmp_path_factory) -> Path:
    return make_archive(tmp_path_factory.mktemp("archive10") / "in", 10)

