import hashlib
import importlib.util
import io
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from meddiff.data.prepare import PrepareOptions, prepare
from meddiff.data.samples import available, samples_dir
from meddiff.errors import InputError
from meddiff.io import find_images, read_volume

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make_samples.py"


def _make_samples():
    spec = importlib.util.spec_from_file_location("make_samples", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _has_pydicom_data() -> bool:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return bool(version("pydicom-data"))
    except PackageNotFoundError:
        return False


def test_sample_sets_and_one_patient_each():
    assert available() == ["colin27", "cxr", "cxr_films", "mni152"]
    with pytest.raises(InputError, match="available"):
        samples_dir("mnist")
    for name in available():
        if name != "cxr_films":  # four held-out chest films, one per patient (the X-ray demos)
            assert len({it.patient_id for it in find_images(samples_dir(name))}) == 1
    assert len(list(samples_dir("cxr_films").glob("*.png"))) == 4


def test_brain_sample_geometry_and_orientation():
    vol = read_volume(samples_dir("colin27") / "colin27" / "coronal.nii.gz")
    assert vol.shape == (53, 160, 152) and vol.spacing == (3.0, 1.0, 1.0)
    # stacking axis 0 runs posterior -> anterior in 3 mm steps; row 0 is superior
    step = vol.affine[:3, 0]
    np.testing.assert_allclose(step, [0, 3, 0])
    assert vol.affine[2, 1] == -1.0
    assert vol.array.dtype == np.float32 and vol.array.max() <= 133


def test_prepare_colin27_gives_held_out_test_slices(tmp_path):
    s = prepare(samples_dir("colin27"), tmp_path / "c", PrepareOptions(split=(0, 0, 1)), progress=False)
    assert s.slices == {"train": 0, "val": 0, "test": 140} and s.empty_slices == 0
    arr = np.load(tmp_path / "c" / "test.npy", mmap_mode="r")
    assert arr.shape == (140, 128, 128)


@pytest.mark.skipif(not _has_pydicom_data(), reason="pydicom-data not installed")
def test_cxr_samples_rebuild_byte_identical():
    mod = _make_samples()
    for name, ds in mod.cxr_files().items():
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        shipped = (samples_dir("cxr") / "rg1" / name).read_bytes()
        assert hashlib.sha256(buf.getvalue()).digest() == hashlib.sha256(shipped).digest(), name
    vol = read_volume(samples_dir("cxr") / "rg1" / "rg1_downsampled_x4.dcm")
    assert vol.shape == (489, 460) and vol.meta["photometric"] == "MONOCHROME1" and vol.meta["monochrome1_inverted"]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/usr/share/mricron/templates/ch2bet.nii.gz").is_file(), reason="Debian mricron-data not installed")
def test_brain_samples_rebuild_identical_voxels_and_affines():
    mod = _make_samples()
    stacks = mod.brain_stacks(mod.COLIN, mod.STEP_MM["colin27"])
    for orient, img in stacks.items():
        shipped = nib.load(samples_dir("colin27") / "colin27" / f"{orient}.nii.gz")
        np.testing.assert_array_equal(np.asarray(img.dataobj), np.asarray(shipped.dataobj))
        np.testing.assert_array_equal(img.affine, shipped.affine)
