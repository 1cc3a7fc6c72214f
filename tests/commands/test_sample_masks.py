"""`meddiff sample --checkpoint inpaint_mr --mask ...` end to end on tiny real images (Colin27 crops): a mask
per input from a folder, a label map with --mask-label, --mask-dilate in mm, and a mask off the image's grid
refused naming both files."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from meddiff.cli import main
from meddiff.data.samples import samples_dir
from meddiff.io import read_volume

COLIN = samples_dir("colin27") / "colin27" / "axial.nii.gz"
FAST = ["--checkpoint", "inpaint_mr", "--no-progress"]  # its default sampler: posterior_mean, one network call


@pytest.fixture(scope="module")
def crops() -> tuple[np.ndarray, np.ndarray]:
    """Two 48x48 crops ([1, 48, 48] volumes, z y x) of real Colin27 tissue and the NIfTI affine of the file."""
    img = nib.load(str(COLIN))
    a = np.asarray(img.dataobj, np.float32)  # x y z
    z = a.shape[2] // 2
    cx, cy = a.shape[0] // 2, a.shape[1] // 2
    c1 = a[cx - 24: cx + 24, cy - 24: cy + 24, z: z + 1]
    c2 = a[cx - 24: cx + 24, cy - 40: cy + 8, z + 1: z + 2]
    return np.stack([c1, c2]), img.affine


def _save(path: Path, xyz: np.ndarray, affine: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(xyz.astype(np.float32), affine), str(path))
    return path


def _box(lo: int, hi: int) -> np.ndarray:
    m = np.zeros((48, 48, 1), np.float32)
    m[lo:hi, lo:hi] = 1
    return m


def test_a_folder_of_masks_fills_each_input_with_its_own_holes_and_keeps_known_pixels(tmp_path, crops):
    data, aff = crops
    inp, masks = tmp_path / "in", tmp_path / "masks"
    for k, name in enumerate(("a", "b")):
        _save(inp / f"{name}.nii.gz", data[k], aff)
    _save(masks / "a_mask.nii.gz", _box(10, 20), aff)
    _save(masks / "b_mask.nii.gz", _box(25, 40), aff)
    assert main(["sample", *FAST, "-i", str(inp), "--mask", str(masks), "-o", str(tmp_path / "out")]) == 0
    for name, (lo, hi) in (("a", (10, 20)), ("b", (25, 40))):
        x = read_volume(inp / f"{name}.nii.gz").array
        y = read_volume(tmp_path / "out" / f"{name}_restored.nii.gz").array
        assert y.shape == x.shape
        hole = np.zeros_like(x, bool)
        hole.T[lo:hi, lo:hi] = True  # the mask was written in x y z
        np.testing.assert_allclose(y[~hole], x[~hole], rtol=0, atol=1e-6 * np.abs(x).max())
        assert np.isfinite(y).all() and np.abs(y[hole] - x[hole]).max() > 0
        # the fill is tissue: closer to the truth than the mean of the known pixels is
        assert np.abs(y[hole] - x[hole]).mean() < np.abs(x[~hole].mean() - x[hole]).mean()


def test_label_map_label_and_dilation_in_mm_choose_the_holes(tmp_path, crops):
    data, aff = crops
    img = _save(tmp_path / "in" / "a.nii.gz", data[0], aff)
    lab = np.zeros((48, 48, 1), np.float32)
    lab[10, 10], lab[30:33, 30:33] = 2, 5
    _save(tmp_path / "lab.nii.gz", lab, aff)
    argv = ["sample", *FAST, "-i", str(img), "--mask", str(tmp_path / "lab.nii.gz"), "--mask-label", "2",
            "--mask-dilate", "2.0", "-o", str(tmp_path / "out")]
    assert main(argv) == 0
    x, y = read_volume(img).array, read_volume(tmp_path / "out" / "a_restored.nii.gz").array
    changed = np.argwhere(np.abs(y - x) > 1e-6 * np.abs(x).max())
    spacing = np.asarray(read_volume(img).spacing)
    # label 2 only (one voxel at x = y = 10; the one-slice volume reads as a 2D image), grown by 2 mm: every
    # change lies within 2 mm of it, and label 5 (at 30-32) is untouched
    assert x.ndim == 2 and len(changed) > 1
    assert (np.linalg.norm((changed - [10, 10]) * spacing, axis=1) <= 2.0 + 1e-6).all()


def test_a_mask_from_another_grid_is_refused_naming_both_files(tmp_path, crops, capsys):
    data, aff = crops
    img = _save(tmp_path / "in" / "a.nii.gz", data[0], aff)
    moved = aff.copy()
    moved[:3, 3] += 10.0
    _save(tmp_path / "m.nii.gz", _box(10, 20), moved)
    code = main(["sample", *FAST, "-i", str(img), "--mask", str(tmp_path / "m.nii.gz"), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "m.nii.gz" in err and "a.nii.gz" in err and "mm apart" in err


def test_samples_with_the_calibrated_sampler_write_an_uncertainty_inside_the_holes(tmp_path, crops):
    data, aff = crops
    img = _save(tmp_path / "in" / "a.nii.gz", data[0], aff)
    _save(tmp_path / "m.nii.gz", _box(12, 30), aff)
    argv = ["sample", *FAST, "--sampler", "dpm_solver_pp", "--steps", "10", "--samples", "2", "-i", str(img),
            "--mask", str(tmp_path / "m.nii.gz"), "-o", str(tmp_path / "out")]
    assert main(argv) == 0
    unc = read_volume(tmp_path / "out" / "a_uncertainty.nii.gz").array  # the card's std scale, fitted for dpm_solver_pp 10
    hole = np.zeros_like(unc, bool)
    hole.T[12:30, 12:30] = True
    assert unc[hole].mean() > 0 and np.abs(unc[~hole]).max() == 0  # known pixels are measured: no uncertainty
