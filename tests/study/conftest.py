"""Shared fixtures of the reader-study tests: real images are the shipped Colin27 axial stack,
"generated" images the same slices downsampled 4x and upsampled back with bicubic interpolation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from meddiff.data.samples import samples_dir
from meddiff.io import read_volume
from study_helpers import bicubic_x4


@pytest.fixture(scope="session")
def real_dir() -> Path:
    return samples_dir("colin27")


@pytest.fixture(scope="session")
def generated_dirs(tmp_path_factory, real_dir) -> dict[str, Path]:
    """Two "methods": bicubic x4 of the axial stack, and the same plus mild noise (seed 0)."""
    vol = read_volume(real_dir / "colin27" / "axial.nii.gz")
    base = np.stack([bicubic_x4(s) for s in np.asarray(vol.array)])
    noisy = base + np.random.default_rng(0).normal(0, 2.0, base.shape).astype(np.float32)
    out = {}
    for name, arr in (("bicubic", base), ("noisy", noisy)):
        d = tmp_path_factory.mktemp(name)
        (d / "colin27").mkdir()
        np.save(d / "colin27" / "axial_restored.npy", arr)  # a `meddiff sample`-style product name
        out[name] = d
    return out
