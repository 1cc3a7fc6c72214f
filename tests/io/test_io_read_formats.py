"""NIfTI, PNG, TIFF and NumPy reading: axis order, affine, full 16-bit range."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import tifffile
from PIL import Image

from meddiff.io import read_volume


@pytest.mark.parametrize("which", ["mni_nifti", "colin_nifti"])
def test_nifti_is_transposed_and_affine_follows(which, request):
    path = request.getfixturevalue(which)
    img = nib.load(path)
    data = img.get_fdata(dtype=np.float32)
    vol = read_volume(path)
    assert vol.shape == data.shape[::-1]
    rng = np.random.default_rng(0)
    for _ in range(5):
        i, j, k = (int(rng.integers(n)) for n in data.shape)
        assert vol.array[k, j, i] == data[i, j, k]
        np.testing.assert_allclose(vol.affine @ [k, j, i, 1], img.affine @ [i, j, k, 1])
    assert vol.spacing == tuple(float(z) for z in img.header.get_zooms()[::-1])
    assert vol.patient_id == path.name[: -len(".nii.gz")]


def test_png_16bit_keeps_full_range(tmp_path, ct_small):
    import pydicom
    counts = pydicom.dcmread(ct_small).pixel_array.astype(np.uint16) * 29  # real CT image, spread to 0..~64000
    counts[0, 0], counts[0, 1] = 0, 65535
    Image.fromarray(counts).save(tmp_path / "ct16.png")
    vol = read_volume(tmp_path / "ct16.png")
    np.testing.assert_array_equal(vol.array, counts.astype(np.float32))
    assert vol.meta["bits"] == 16 and vol.array.max() == 65535


def test_png_8bit_and_tiff_16bit_stack(tmp_path, emri_small):
    import pydicom
    frames = pydicom.dcmread(emri_small).pixel_array.astype(np.uint16) * 100
    tifffile.imwrite(tmp_path / "stack.tif", frames)
    vol = read_volume(tmp_path / "stack.tif")
    np.testing.assert_array_equal(vol.array, frames.astype(np.float32))
    gray8 = (frames[3] // 256).astype(np.uint8)
    Image.fromarray(gray8).save(tmp_path / "g8.png")
    np.testing.assert_array_equal(read_volume(tmp_path / "g8.png").array, gray8.astype(np.float32))


def test_npy_and_npz(tmp_path, emri_small):
    import pydicom
    frames = pydicom.dcmread(emri_small).pixel_array[:3]
    np.save(tmp_path / "a.npy", frames)
    assert read_volume(tmp_path / "a.npy").spacing == (1.0, 1.0, 1.0)
    np.savez(tmp_path / "b.npz", image=frames, spacing=np.array([3.0, 0.5, 0.5]), other=np.zeros(2))
    vol = read_volume(tmp_path / "b.npz")
    np.testing.assert_array_equal(vol.array, frames)
    assert vol.spacing == (3.0, 0.5, 0.5) and np.allclose(np.linalg.norm(vol.affine[:3, :3], axis=0), [3.0, 0.5, 0.5])
    np.savez(tmp_path / "c.npz", frames[0])
    assert read_volume(tmp_path / "c.npz").shape == (64, 64)
