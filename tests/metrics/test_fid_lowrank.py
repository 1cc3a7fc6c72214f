"""Low-rank exact FID (meddiff.metrics.fid_lowrank) against the D x D eigendecomposition and closed forms."""

from __future__ import annotations

import numpy as np
import pytest

from meddiff.errors import InputError
from meddiff.metrics.fid import fid_from_features, frechet_distance
from meddiff.metrics.fid_lowrank import fid_low_rank


@pytest.mark.parametrize("n1,n2,d", [(5, 7, 40), (30, 12, 200), (3, 3, 2)])
def test_equals_dense_fid(n1, n2, d):
    rng = np.random.default_rng(n1 * 100 + d)
    f1 = rng.normal(0, 1, (n1, d)) @ rng.normal(0, 1, (d, d)) / np.sqrt(d)
    f2 = rng.normal(0.3, 2, (n2, d))
    # the dense route loses ~1e-8 relative in square roots of rank-deficient matrices' ~0 eigenvalues
    assert fid_low_rank(f1, f2) == pytest.approx(fid_from_features(f1, f2), rel=1e-6, abs=1e-9)


def test_identical_sets_give_zero_and_shift_gives_mean_distance():
    f = np.random.default_rng(0).normal(size=(20, 64))
    assert fid_low_rank(f, f) == pytest.approx(0.0, abs=1e-9)
    shift = np.full(64, 0.5)  # same covariance: d^2 = ||shift||^2 = 64 / 4
    assert fid_low_rank(f, f + shift) == pytest.approx(16.0, rel=1e-9)
    s = np.cov(f, rowvar=False)
    assert fid_low_rank(f, f + shift) == pytest.approx(frechet_distance(f.mean(0), s, f.mean(0) + shift, s), rel=1e-6)


def test_bad_input():
    with pytest.raises(InputError, match="N >= 2"):
        fid_low_rank(np.zeros((1, 4)), np.zeros((3, 4)))
    with pytest.raises(InputError, match="differ in dimension"):
        fid_low_rank(np.zeros((2, 4)), np.zeros((3, 5)))
