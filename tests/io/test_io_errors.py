"""Every bad input raises InputError naming the file and what was expected."""

from __future__ import annotations

import re

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image

from meddiff.errors import InputError
from meddiff.io import check_not_constant, find_images, read_volume


def _named(path) -> str:
    return re.escape(str(path))


def test_missing_path(tmp_path):
    with pytest.raises(InputError, match=_named(tmp_path / "nope.dcm") + ".*no such file"):
        read_volume(tmp_path / "nope.dcm")
    with pytest.raises(InputError, match="no such folder"):
        find_images(tmp_path / "nope")


def test_empty_folder(tmp_path):
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(InputError, match=_named(tmp_path) + ": no readable image"):
        find_images(tmp_path)
    with pytest.raises(InputError, match=_named(tmp_path) + ": folder holds no DICOM files"):
        read_volume(tmp_path)


@pytest.mark.parametrize("keep", [100, 0.5])
def test_truncated_dicom(tmp_path, ct_small, keep):
    data = ct_small.read_bytes()
    bad = tmp_path / "cut.dcm"
    bad.write_bytes(data[: keep if isinstance(keep, int) else int(len(data) * keep)])
    with pytest.raises(InputError, match=_named(bad) + ".*(truncated|corrupt)"):
        read_volume(bad)


def test_dicom_without_pixel_data(tmp_path, ct_small):
    ds = pydicom.dcmread(ct_small)
    del ds.PixelData
    ds.save_as(tmp_path / "nopix.dcm")
    with pytest.raises(InputError, match=_named(tmp_path / "nopix.dcm") + ": DICOM file has no pixel data"):
        read_volume(tmp_path / "nopix.dcm")


def _nifti(tmp_path, name, data, affine):
    nib.save(nib.Nifti1Image(data, affine), tmp_path / name)
    return tmp_path / name


def test_nifti_nan_inf_counted(tmp_path, colin_nifti):
    img = nib.load(colin_nifti)
    data = img.get_fdata(dtype=np.float32)[80:84]
    data[0, 0, :3] = np.nan
    data[1, 1, 1] = np.inf
    path = _nifti(tmp_path, "nan.nii.gz", data, img.affine)
    with pytest.raises(InputError, match=_named(path) + ": image contains 3 NaN and 1 infinite"):
        read_volume(path)


def test_4d_rejected_singleton_squeezed(tmp_path, colin_nifti):
    img = nib.load(colin_nifti)
    data = img.get_fdata(dtype=np.float32)[80:84, 100:110, 90:95]
    path4 = _nifti(tmp_path, "t2.nii", np.stack([data, data + 1], axis=-1), img.affine)
    with pytest.raises(InputError, match=_named(path4) + r".*\(4D.*expected a 2D image or 3D volume"):
        read_volume(path4)
    path1 = _nifti(tmp_path, "t1.nii", data[..., None], img.affine)
    vol = read_volume(path1)
    assert vol.shape == (5, 10, 4)
    np.testing.assert_array_equal(vol.array, data.T)
    with pytest.raises(InputError, match=_named(path1) + ".*3D.*expected at most 2D"):
        read_volume(path1, max_dims=2)


def test_rgb_dicom_and_png(tmp_path, sc_rgb):
    palette = sc_rgb.parent / "OT-PAL-8-face.dcm"  # PALETTE COLOR is colour too
    if palette.exists():
        with pytest.raises(InputError, match=_named(palette) + ".*PALETTE COLOR.*colour"):
            read_volume(palette)
    with pytest.raises(InputError, match=_named(sc_rgb) + ".*colour.*expected a grayscale"):
        read_volume(sc_rgb)
    rgb = pydicom.dcmread(sc_rgb).pixel_array
    gray = read_volume(sc_rgb, allow_rgb_to_gray=True)
    np.testing.assert_allclose(gray.array, rgb @ [0.299, 0.587, 0.114], rtol=1e-5)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    with pytest.raises(InputError, match=_named(tmp_path / "c.png") + ".*colour"):
        read_volume(tmp_path / "c.png")
    Image.fromarray(np.repeat(rgb[..., :1], 3, axis=-1)).save(tmp_path / "g.png")  # gray stored as RGB
    np.testing.assert_array_equal(read_volume(tmp_path / "g.png").array, rgb[..., 0])


def test_constant_image(tmp_path):
    np.save(tmp_path / "flat.npy", np.full((8, 9), 7.0))
    vol = read_volume(tmp_path / "flat.npy")
    assert vol.meta["constant"] is True
    with pytest.raises(InputError, match=_named(tmp_path / "flat.npy") + ": image is constant \\(every value = 7\\)"):
        check_not_constant(vol)
    check_not_constant(read_volume(tmp_path / "flat.npy").with_array(np.eye(8, 9, dtype=np.float32)))


def test_mixed_sizes_and_duplicate_positions_in_series(tmp_path, emri_small, mr_small, series_maker):
    frames = pydicom.dcmread(emri_small).pixel_array[:4]
    series_maker(tmp_path / "mixed", frames, mr_small)
    victim = sorted((tmp_path / "mixed").iterdir())[0]
    ds = pydicom.dcmread(victim)
    ds.Rows, ds.Columns = 32, 64
    ds.PixelData = frames[0, :32].astype("<u2").tobytes()
    ds.save_as(victim)
    with pytest.raises(InputError, match=_named(tmp_path / "mixed") + ".*has Rows (32|64) but .* has (32|64); expected one Rows"):
        read_volume(tmp_path / "mixed")
    series_maker(tmp_path / "dup", np.concatenate([frames[:2], frames[:2]]), mr_small, dz=0.0)
    with pytest.raises(InputError, match="same slice position"):
        read_volume(tmp_path / "dup")


def test_unknown_format_and_corrupt_png_nifti(tmp_path, colin_nifti):
    (tmp_path / "x.mha").write_bytes(b"ObjectType = Image\n")
    with pytest.raises(InputError, match=_named(tmp_path / "x.mha") + ": unknown image format.*expected one of"):
        read_volume(tmp_path / "x.mha")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    with pytest.raises(InputError, match=_named(tmp_path / "bad.png") + ": cannot read image"):
        read_volume(tmp_path / "bad.png")
    (tmp_path / "cut.nii.gz").write_bytes(colin_nifti.read_bytes()[:5000])
    with pytest.raises(InputError, match=_named(tmp_path / "cut.nii.gz") + ": cannot read as NIfTI"):
        read_volume(tmp_path / "cut.nii.gz")


def test_multiple_series_in_one_folder(tmp_path, emri_small, mr_small, series_maker):
    frames = pydicom.dcmread(emri_small).pixel_array[:2]
    series_maker(tmp_path / "a", frames, mr_small)
    series_maker(tmp_path / "b", frames, mr_small)
    for f in (tmp_path / "b").iterdir():
        f.rename(tmp_path / "a" / ("b_" + f.name))
    with pytest.raises(InputError, match="folder holds 2 DICOM series"):
        read_volume(tmp_path / "a")
    assert [it.kind for it in find_images(tmp_path)] == ["dicom_series", "dicom_series"]
