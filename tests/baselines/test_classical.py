"""Classical baselines on a real MNI152 slice: NLM lowers the error of Gaussian noise, the median
filter removes salt-and-pepper, biharmonic inpainting beats filling the hole with its true mean."""

import numpy as np
import pytest
import torch

from meddiff.baselines.classical import biharmonic, classical_restore, median_filter, nl_means
from meddiff.errors import InputError

from .conftest import mni_crop


@pytest.fixture(scope="module")
def slice64() -> np.ndarray:
    return mni_crop(64)[0, 0].double().numpy()


def rmse(a, b) -> float:
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


def test_nlm_lowers_the_error_of_a_noisy_real_slice(slice64):
    noisy = slice64 + np.random.default_rng(0).normal(0, 0.1, slice64.shape)
    out = nl_means(noisy)
    assert rmse(out, slice64) < 0.7 * rmse(noisy, slice64)


def test_median_removes_salt_and_pepper(slice64):
    rng = np.random.default_rng(1)
    hit = rng.random(slice64.shape) < 0.05
    noisy = np.where(hit, np.where(rng.random(slice64.shape) < 0.5, -1.0, 1.0), slice64)
    out = median_filter(noisy, 3)
    assert rmse(out, slice64) < 0.4 * rmse(noisy, slice64)
    assert np.abs(out - slice64)[hit].max() < 0.5 * np.abs(noisy - slice64)[hit].max()  # no impulse survives
    assert np.array_equal(median_filter(slice64, 1), slice64)


def test_biharmonic_fills_a_hole_better_than_its_mean_and_keeps_known_pixels(slice64):
    mask = np.zeros_like(slice64)
    mask[24:36, 20:34] = 1
    holed = slice64 * (1 - mask)
    out = biharmonic(holed, mask)
    h = mask.astype(bool)
    oracle = slice64[h].mean()  # the best constant fill, which needs the missing pixels themselves
    assert rmse(out[h], slice64[h]) < 0.8 * rmse(oracle, slice64[h])
    assert np.array_equal(out[~h], slice64[~h])


def test_classical_restore_batches_slices_and_refuses_bad_input(slice64):
    planes = torch.from_numpy(np.stack([slice64, -slice64]))[:, None].float()
    out = classical_restore("median", planes, torch.ones_like(planes))
    assert out.shape == (1, 2, 1, 64, 64)
    assert torch.allclose(out[0, 1, 0].double(), torch.from_numpy(median_filter(-slice64)).clamp(-1, 1), atol=1e-6)
    with pytest.raises(InputError, match="--method blur: expected one of"):
        classical_restore("blur", planes, planes)
    with pytest.raises(InputError, match="covers the whole image"):
        biharmonic(slice64, np.ones_like(slice64))
    with pytest.raises(InputError, match="median filter size 2: expected an odd integer"):
        median_filter(slice64, 2)


def test_missing_scikit_image_names_the_package(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_skimage(name, *a, **k):
        if name == "skimage" or name.startswith("skimage."):
            raise ImportError("No module named 'skimage'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_skimage)
    with pytest.raises(InputError, match=r"scikit-image: pip install 'meddiff\[baselines\]'"):
        nl_means(np.zeros((8, 8)))
