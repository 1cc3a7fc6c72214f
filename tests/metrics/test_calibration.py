"""Uncertainty calibration: synthetic heteroscedastic errors with known std, posterior-sample
simulations for the 1 + 1/S correction and the binning bias, sparsification by hand, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from meddiff.errors import InputError
from meddiff.metrics.calibration import (
    CalibrationResult, calibration, calibration_figure, error_std_factor, sparsification_curve,
)

N = 100_000
S_LO, S_HI = 0.05, 1.0


@pytest.fixture(scope="module")
def hetero():
    """error ~ N(0, s^2) with s ~ U(0.05, 1) per pixel: a std that is exactly calibrated."""
    rng = np.random.default_rng(0)
    s = rng.uniform(S_LO, S_HI, N)
    return s, rng.standard_normal(N) * s


def test_known_std_lies_on_the_identity(hetero):
    s, e = hetero
    r = calibration(s, e, bins=10)
    assert sum(r.bin_count) == N and len(r.bin_count) == 10 and max(r.bin_count) - min(r.bin_count) <= 1
    assert np.all(np.diff(r.bin_rmv) > 0)
    # each bin holds 10,000 pixels: RMSE has a relative sampling std of about 1/sqrt(2 * 10^4) = 0.7%
    np.testing.assert_allclose(r.bin_rmse, r.bin_rmv, rtol=0.03)
    assert r.ratio == pytest.approx(1.0, abs=0.01)
    assert r.ece < 0.01


def test_pearson_matches_its_closed_form(hetero):
    """corr(s, s|z|) = E|z| Var(s) / sqrt(Var(s) (E[s^2] - E[s]^2 2/pi)) for s ~ U(a, b), z ~ N(0, 1)."""
    s, e = hetero
    mean, var = (S_LO + S_HI) / 2, (S_HI - S_LO) ** 2 / 12
    expected = math.sqrt(2 / math.pi) * var / math.sqrt(var * (var + mean**2 - mean**2 * 2 / math.pi))
    r = calibration(s, e)
    assert r.pearson == pytest.approx(expected, abs=0.01)  # expected = 0.523
    assert r.spearman > 0.4


def test_overconfident_std_gives_ratio_two_and_a_large_ece(hetero):
    s, e = hetero
    good, over, under = calibration(s, e), calibration(s / 2, e), calibration(2 * s, e)
    assert over.ratio == pytest.approx(2.0, rel=0.01)
    assert under.ratio == pytest.approx(0.5, rel=0.01)
    np.testing.assert_allclose(np.array(over.bin_rmse) / np.array(over.bin_rmv), 2.0, rtol=0.03)
    assert over.ece > 20 * good.ece
    # scaling the std changes neither the ranking nor the correlation
    assert over.pearson == pytest.approx(good.pearson, abs=1e-12)
    assert over.ause == pytest.approx(good.ause, abs=1e-12)


def test_ause_zero_for_the_oracle_and_random_for_unrelated_std(hetero):
    s, e = hetero
    oracle = calibration(np.abs(e), e)
    assert oracle.ause == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(oracle.sparsification, oracle.oracle, atol=1e-12)
    known = calibration(s, e)
    unrelated = calibration(np.random.default_rng(1).uniform(S_LO, S_HI, N), e)
    assert 0.1 * known.ause_random < known.ause < 0.5 * known.ause_random
    assert unrelated.ause == pytest.approx(unrelated.ause_random, rel=0.05)
    assert abs(unrelated.pearson) < 0.02
    # the oracle curve falls monotonically to 0 as the largest errors go
    assert np.all(np.diff(oracle.oracle) <= 1e-12) and oracle.oracle[0] == pytest.approx(oracle.rmse)


def test_constant_std_is_exactly_the_random_ranking():
    """All std tied: the expected curve over random removal order is RMSE_all at every fraction."""
    e = np.random.default_rng(2).standard_normal(1000)
    r = calibration(np.full(1000, 0.3), e)
    np.testing.assert_allclose(r.sparsification, r.rmse, rtol=1e-12)
    assert r.ause == pytest.approx(r.ause_random, rel=1e-12)
    assert math.isnan(r.pearson) and math.isnan(r.spearman)


def test_sparsification_curve_by_hand():
    key = np.array([0.4, 0.1, 0.3, 0.2])
    sq = np.array([1.0, 2.0, 3.0, 4.0]) ** 2
    got = sparsification_curve(key, sq, np.array([0.0, 0.25, 0.5, 0.75]))
    # removal order by key: 1, 3, 4, leaving 2
    want = [math.sqrt(30 / 4), math.sqrt(29 / 3), math.sqrt(20 / 2), 2.0]
    np.testing.assert_allclose(got, want, rtol=1e-15)
    # a tie between the first two: removing one of them removes (1 + 9) / 2 in expectation
    got = sparsification_curve(np.array([0.4, 0.1, 0.4, 0.2]), sq, np.array([0.25]))
    np.testing.assert_allclose(got, [math.sqrt((30 - 5) / 3)], rtol=1e-15)


def _posterior(rng, sigma, S):
    return rng.standard_normal((S, sigma.size)) * sigma


def test_samples_corrects_the_error_of_the_sample_mean():
    """Truth and S samples drawn from the same N(0, sigma^2): E[(mean - truth)^2] = sigma^2 (1 + 1/S), eq. (1)."""
    rng = np.random.default_rng(3)
    sigma = rng.uniform(S_LO, S_HI, N)
    for S in (1, 4):
        x, truth = _posterior(rng, sigma, S), rng.standard_normal(N) * sigma
        std = x.std(0, ddof=1) if S > 1 else sigma  # S = 1: the error is of one sample; std known
        raw, corrected = calibration(std, x.mean(0) - truth), calibration(std, x.mean(0) - truth, samples=S)
        assert raw.ratio == pytest.approx(math.sqrt(1 + 1 / S), rel=0.015)
        assert corrected.ratio == pytest.approx(1.0, rel=0.015)
        assert corrected.factor == error_std_factor(S) == pytest.approx(math.sqrt(1 + 1 / S))


def test_binning_by_a_noisy_std_is_biased_and_bin_std_removes_it():
    rng = np.random.default_rng(4)
    sigma, S = rng.uniform(S_LO, S_HI, N), 4
    x, truth = _posterior(rng, sigma, S), rng.standard_normal(N) * sigma
    std, error = x.std(0, ddof=1), x.mean(0) - truth
    biased = calibration(std, error, samples=S)
    ratios = np.array(biased.bin_rmse) / np.array(biased.bin_rmv)
    assert ratios[0] > 2.0 and ratios[-1] < 0.8  # regression to the mean, though calibrated on average
    assert biased.ratio == pytest.approx(1.0, rel=0.015)
    independent = _posterior(rng, sigma, S).std(0, ddof=1)
    fixed = calibration(std, error, samples=S, bin_std=independent, bins=5)
    # 20,000 pixels of mixed sigma per bin: RMSE and RMV each have ~1% sampling error
    np.testing.assert_allclose(np.array(fixed.bin_rmse) / np.array(fixed.bin_rmv), 1.0, rtol=0.04)
    assert fixed.ece < 0.1 * biased.ece


def test_mask_selects_pixels_and_ignores_the_rest(hetero):
    s, e = hetero
    shape = (10, 1, 100, 100)
    s4, e4 = s.reshape(shape).copy(), e.reshape(shape).copy()
    mask = np.zeros((100, 100), dtype=bool)
    mask[20:70, 10:90] = True  # [H, W], broadcast over the batch
    full = np.broadcast_to(mask, shape)
    want = calibration(s4[full], e4[full])
    e4[~full], s4[~full] = np.nan, -1.0  # garbage outside the mask is never read
    got = calibration(torch.from_numpy(s4), torch.from_numpy(e4), mask=torch.from_numpy(mask))
    assert got == want and got.n == full.sum()
    assert calibration(s4, e4, mask=full.astype(np.uint8)) == want


def test_to_row_has_the_scalars():
    r = calibration(np.array([0.1, 0.2, 0.3]), np.array([0.1, -0.3, 0.2]), bins=5)
    assert isinstance(r, CalibrationResult) and r.bin_count == (1, 1, 1)
    row = r.to_row()
    assert list(row) == ["pixels", "pearson", "spearman", "rmse", "rmv", "ratio", "ece", "ause", "ause_random"]
    assert row["pixels"] == 3 and row["rmse"] == pytest.approx(math.sqrt(0.14 / 3))
    with pytest.raises(AttributeError):
        r.ratio = 1.0  # frozen


@pytest.mark.parametrize("kwargs, match", [
    (dict(std=np.ones((4, 4)), error=np.ones((4, 5))), r"std shape \(4, 4\) differs from error shape \(4, 5\)"),
    (dict(std=np.ones(4), error=np.array([0.0, np.nan, 1.0, 1.0])), r"error has 1 NaN/inf"),
    (dict(std=np.array([1.0, np.inf, 1.0, 1.0]), error=np.ones(4)), r"std has 1 NaN/inf"),
    (dict(std=np.array([0.1, -0.2, 0.3, 0.1]), error=np.ones(4)), r"std has 1 negative value\(s\) \(min -0.2\)"),
    (dict(std=np.ones(4), error=np.ones(4), mask=np.zeros(4, bool)), r"mask selects no pixels"),
    (dict(std=np.ones(4), error=np.ones(4), mask=np.array([0, 2, 1, 0])), r"mask must be boolean or 0/1"),
    (dict(std=np.ones(4), error=np.ones(4), mask=np.ones(3, bool)), r"mask shape \(3,\) cannot be broadcast"),
    (dict(std=np.zeros(4), error=np.ones(4)), r"std is 0 at all 4 selected pixels"),
    (dict(std=np.ones(4), error=np.ones(4), bins=0), r"bins=0"),
    (dict(std=np.ones(4), error=np.ones(4), samples=0), r"samples=0"),
    (dict(std=np.ones(4), error=np.ones(4), bin_std=np.ones(3)), r"bin_std shape \(3,\) differs"),
])
def test_bad_input_names_what_is_wrong(kwargs, match):
    with pytest.raises(InputError, match=match):
        calibration(**kwargs)


def test_figure_is_a_png_written_atomically(tmp_path, hetero):
    from PIL import Image

    s, e = hetero
    path = tmp_path / "calibration.png"
    out = calibration_figure({"known std": calibration(s, e), "overconfident": calibration(s / 2, e)}, path,
                             title="synthetic")
    assert out == path and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        im.verify()
    calibration_figure(calibration(s, e, samples=4), path)  # a single result, overwriting
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calibration.png"]  # no temporary left behind
    with pytest.raises(InputError, match="CalibrationResult"):
        calibration_figure({}, tmp_path / "empty.png")
