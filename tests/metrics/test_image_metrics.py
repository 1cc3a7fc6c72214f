"""PSNR / SSIM / accutance: closed forms, parity with scikit-image, mask and invariance properties."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from meddiff.errors import InputError
from meddiff.metrics.image import accutance, aggregate, edge_mask, gradient_ratio, image_metrics, psnr, ssim

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def mni_slice() -> np.ndarray:
    """An axial slice of the MNI152 template (shipped with nilearn), scaled to [-1, 1], ~99x117."""
    nib = pytest.importorskip("nibabel")
    nilearn = pytest.importorskip("nilearn")
    path = os.path.join(os.path.dirname(nilearn.__file__), "datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
    a = np.asarray(nib.load(path).dataobj[::2, ::2, 90], dtype=np.float64)
    return a / a.max() * 2 - 1


def _blur(x: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(x, sigma, mode="reflect")


def test_psnr_matches_closed_form_of_known_mse():
    rng = np.random.default_rng(0)
    t = rng.uniform(-1, 1, (16, 16))
    d = np.where(rng.random((16, 16)) < 0.5, 0.1, -0.1)  # every pixel off by exactly 0.1: MSE = 0.01
    assert psnr(t + d, t, data_range=2.0) == pytest.approx(10 * np.log10(4 / 0.01), abs=1e-9)
    assert psnr(t, t, 2.0) == float("inf")


def test_psnr_batch_gives_one_value_per_image():
    t = torch.zeros(3, 1, 8, 8)
    p = t + torch.tensor([0.1, 0.2, 0.4]).view(3, 1, 1, 1)
    out = psnr(p, t, 1.0)
    np.testing.assert_allclose(out, 10 * np.log10(1 / np.array([0.01, 0.04, 0.16])), rtol=1e-6)


def test_ssim_parity_with_skimage(mni_slice):
    skm = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(1)
    for pred in (np.clip(mni_slice + 0.1 * rng.standard_normal(mni_slice.shape), -1, 1), _blur(mni_slice)):
        ref = skm.structural_similarity(pred, mni_slice, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=2.0)
        assert ssim(pred, mni_slice, 2.0) == pytest.approx(ref, abs=1e-4)
        assert ssim(pred, mni_slice, 2.0) < 0.99


def test_ssim_of_identical_images_is_one(mni_slice):
    assert ssim(mni_slice, mni_slice, 2.0) == pytest.approx(1.0, abs=1e-12)


def test_ssim_rejects_images_smaller_than_the_window():
    with pytest.raises(InputError, match=r"at least 11x11.*\(8, 20\)"):
        ssim(np.zeros((8, 20)), np.zeros((8, 20)), 2.0)


def test_shape_mismatch_and_bad_range_are_named():
    with pytest.raises(InputError, match=r"pred shape \(1, 1, 16, 16\) differs from target shape \(1, 1, 16, 17\)"):
        psnr(np.zeros((16, 16)), np.zeros((16, 17)), 2.0)
    with pytest.raises(InputError, match="data_range must be a positive"):
        psnr(np.zeros((16, 16)), np.zeros((16, 16)), 0)


def test_masked_metrics_depend_only_on_masked_pixels(mni_slice):
    rng = np.random.default_rng(2)
    t = mni_slice
    p = t + 0.05 * rng.standard_normal(t.shape)
    mask = np.zeros(t.shape, bool)
    mask[20:70, 20:80] = True
    p2 = p.copy()
    p2[~mask] = rng.uniform(-1, 1, (~mask).sum())  # change only pixels outside the mask
    assert psnr(p2, t, 2.0, mask) == pytest.approx(psnr(p, t, 2.0, mask), abs=1e-12)
    assert psnr(p2, t, 2.0) < psnr(p, t, 2.0) - 1  # ...which the unmasked metric does see
    # PSNR over the mask = PSNR of the masked pixels alone
    mse = np.mean((p[mask] - t[mask]) ** 2)
    assert psnr(p, t, 2.0, mask) == pytest.approx(10 * np.log10(4 / mse), abs=1e-9)
    # SSIM averages window centres inside the mask: outside pixels matter only within 5 px of it
    far = np.zeros(t.shape, bool)
    far[15:75, 15:85] = True
    p3 = p.copy()
    p3[~far] = 0.0
    assert ssim(p3, t, 2.0, mask) == pytest.approx(ssim(p, t, 2.0, mask), abs=1e-12)
    # accutance uses 3x3 Sobel: pixels more than 1 px outside the mask do not matter
    assert accutance(p3, 2.0, mask) == pytest.approx(accutance(p, 2.0, mask), abs=1e-12)
    assert accutance(p3, 2.0) != pytest.approx(accutance(p, 2.0), rel=1e-3)


def test_empty_mask_is_an_error():
    with pytest.raises(InputError, match="mask selects no pixel"):
        psnr(np.zeros((16, 16)), np.ones((16, 16)), 2.0, np.zeros((16, 16), bool))


def test_blurred_image_has_lower_accutance(mni_slice):
    a = accutance(mni_slice, 2.0)
    blurred = [accutance(_blur(mni_slice, s), 2.0) for s in (0.7, 1.5, 3.0)]
    assert a > blurred[0] > blurred[1] > blurred[2]
    assert gradient_ratio(_blur(mni_slice), mni_slice) < 0.6


def test_accutance_of_linear_ramp_is_known():
    # I(y, x) = s x: Sobel/8 gives |grad I| = s everywhere, so A = 1000 s^2 / R^2
    x = np.tile(np.arange(20.0), (12, 1)) * 0.05
    assert accutance(x, data_range=2.0) == pytest.approx(1000 * 0.05**2 / 4, rel=1e-12)


def test_accutance_invariant_to_offset_and_joint_scaling(mni_slice):
    a = accutance(mni_slice, 2.0)
    assert accutance(mni_slice + 3.7, 2.0) == pytest.approx(a, rel=1e-12)
    hu = mni_slice * 1000 - 200  # same image in "HU", range 2 -> 2000
    assert accutance(hu, 2000.0) == pytest.approx(a, rel=1e-12)
    assert gradient_ratio(_blur(hu), hu) == pytest.approx(gradient_ratio(_blur(mni_slice), mni_slice), rel=1e-9)


def test_edge_mask_selects_top_gradients(mni_slice):
    m = edge_mask(mni_slice, 0.9)
    assert m.shape == mni_slice.shape and m.dtype == bool
    assert 0.08 < m.mean() < 0.11 and not m[0].any() and not m[:, -1].any()
    # accutance over the truth's edges exceeds accutance over the whole image
    assert accutance(mni_slice, 2.0, m) > 5 * accutance(mni_slice, 2.0)


def test_image_metrics_and_aggregate():
    t = np.zeros((16, 16))
    t[:, 8:] = 1.0
    recs = [image_metrics(t + d, t, 2.0) for d in (0.1, 0.2)]
    assert list(recs[0]) == ["psnr", "ssim", "accutance", "gradient_ratio"]
    assert recs[0]["gradient_ratio"] == pytest.approx(1.0)  # a constant offset keeps every gradient
    agg = aggregate(recs)
    p = [10 * np.log10(4 / 0.01), 10 * np.log10(4 / 0.04)]
    assert agg["psnr"]["mean"] == pytest.approx(np.mean(p))
    assert agg["psnr"]["std"] == pytest.approx(np.std(p, ddof=1))
    assert agg["psnr"]["n"] == 2
    assert aggregate(recs[:1])["ssim"]["std"] == 0.0
    with pytest.raises(InputError, match="no per-image results"):
        aggregate([])


def test_torch_and_numpy_inputs_agree(mni_slice):
    p = _blur(mni_slice)
    tp, tt = torch.from_numpy(p)[None, None].float(), torch.from_numpy(mni_slice)[None, None].float()
    assert ssim(tp, tt, 2.0)[0] == pytest.approx(ssim(p, mni_slice, 2.0), abs=1e-5)
    assert psnr(tp, tt, 2.0)[0] == pytest.approx(psnr(p, mni_slice, 2.0), abs=1e-4)
