"""Fixtures for meddiff.io tests: real DICOM/NIfTI files shipped with installed packages."""

from __future__ import annotations

import copy
import random
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid


def _data_store() -> Path:
    data_store = pytest.importorskip("data_store", reason="pydicom-data (data_store) not installed")
    return Path(data_store.__file__).parent / "data"


def _existing(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"test file {path} not present on this machine")
    return path


@pytest.fixture(scope="session")
def ct_small() -> Path:
    from pydicom.data import get_testdata_file
    return Path(get_testdata_file("CT_small.dcm"))


@pytest.fixture(scope="session")
def mr_small() -> Path:
    from pydicom.data import get_testdata_file
    return Path(get_testdata_file("MR_small.dcm"))


@pytest.fixture(scope="session")
def emri_small() -> Path:
    return _existing(_data_store() / "emri_small.dcm")


@pytest.fixture(scope="session")
def rg1_mono1() -> Path:
    return _existing(_data_store() / "RG1_UNCR.dcm")


@pytest.fixture(scope="session")
def mr2_oblique() -> Path:
    return _existing(_data_store() / "MR2_UNCR.dcm")


@pytest.fixture(scope="session")
def sc_rgb() -> Path:
    return _existing(_data_store() / "SC_rgb.dcm")


@pytest.fixture(scope="session")
def mni_nifti() -> Path:
    import nilearn
    return _existing(Path(nilearn.__file__).parent / "datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")


@pytest.fixture(scope="session")
def colin_nifti() -> Path:
    return _existing(Path("/usr/share/mricron/templates/ch2bet.nii.gz"))


# Oblique orientation of MR2_UNCR.dcm (row cosine, column cosine), used for synthetic series.
OBLIQUE = (0.569486, 0.822001, 0.0, 0.0, 0.0, -1.0)


def make_series(folder: Path, frames: np.ndarray, template: Path, *, dz: float = 2.5,
                orientation=OBLIQUE, with_positions: bool = True, seed: int = 0) -> dict:
    """Split `frames` [Z, Y, X] (uint16) into single-frame DICOM files written in shuffled order
    with shuffled, meaningless file names; slice k sits at origin + k*dz*normal (LPS)."""
    folder.mkdir(parents=True, exist_ok=True)
    ds0 = pydicom.dcmread(template)
    o = np.asarray(orientation, float)
    normal = np.cross(o[:3], o[3:])
    origin = np.array([-20.0, 30.0, 40.0])
    series_uid = generate_uid()
    order = list(range(frames.shape[0]))
    random.Random(seed).shuffle(order)
    for n, k in enumerate(order):
        ds = copy.deepcopy(ds0)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in o]
        if with_positions:
            ds.ImagePositionPatient = [f"{v:.4f}" for v in origin + k * dz * normal]
        else:
            del ds.ImagePositionPatient
        ds.InstanceNumber = k + 1
        ds.Rows, ds.Columns = frames.shape[1:]
        ds.PixelRepresentation = 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelData = frames[k].astype("<u2").tobytes()
        ds.save_as(folder / f"f{n:03d}{'' if n % 2 else '.dcm'}", enforce_file_format=True)
    return {"origin": origin, "normal": normal, "orientation": o, "dz": dz}


@pytest.fixture
def series_maker():
    """The :func:`make_series` helper (tests folders are not packages, so it is passed as a fixture)."""
    return make_series
