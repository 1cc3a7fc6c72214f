"""Tiny image folders for the data tests (a few small NIfTI volumes; fast to prepare)."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest


def write_nifti(path: Path, zyx: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> Path:
    """Save a [Z, Y, X] array as NIfTI (nibabel order [X, Y, Z]), as meddiff.io reads it back."""
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.diag([spacing[2], spacing[1], spacing[0], 1.0])
    nib.save(nib.Nifti1Image(np.ascontiguousarray(np.asarray(zyx).T), affine), str(path))
    return path


def blob_volume(seed: int, z: int = 3, y: int = 12, x: int = 10, scale: float = 100.0) -> np.ndarray:
    """A [Z, Y, X] float32 volume: a bright random ellipse on a zero background per slice."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:y, :x]
    vol = np.zeros((z, y, x), np.float32)
    for k in range(z):
        cy, cx = rng.uniform(0.3, 0.7) * y, rng.uniform(0.3, 0.7) * x
        inside = ((yy - cy) / (0.35 * y)) ** 2 + ((xx - cx) / (0.35 * x)) ** 2 < 1
        vol[k][inside] = scale * rng.uniform(0.5, 1.0, size=inside.sum())
    return vol


@pytest.fixture(name="write_nifti")
def write_nifti_fixture():
    """The `write_nifti` helper, for tests (conftest modules cannot be imported directly)."""
    return write_nifti


@pytest.fixture
def multi_patient_dir(tmp_path) -> Path:
    """10 patients (subfolders p00..p09), each one or two small volumes of different scales."""
    root = tmp_path / "in"
    for p in range(10):
        write_nifti(root / f"p{p:02d}" / "t1.nii.gz", blob_volume(p, scale=50.0 * (p + 1)))
        if p % 3 == 0:
            write_nifti(root / f"p{p:02d}" / "t2.nii.gz", blob_volume(100 + p, z=2, scale=10.0))
    return root
