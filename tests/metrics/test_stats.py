"""Bootstrap CIs and paired tests (meddiff.metrics.stats) on synthetic data of known truth."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from meddiff.errors import InputError
from meddiff.metrics.stats import (
    bootstrap_ci, cluster_bootstrap_means, cluster_means, paired_comparison, percentile_interval, wilcoxon_signed_rank,
)


def test_coverage_of_known_mean_is_about_95_percent():
    # 400 independent data sets of 40 i.i.d. N(3, 2^2) values, each with its own bootstrap (1000 resamples)
    rng = np.random.default_rng(123)
    hits = 0
    trials = 400
    for k in range(trials):
        ci = bootstrap_ci(rng.normal(3.0, 2.0, 40), n_resamples=1000, seed=k)
        hits += ci.lo <= 3.0 <= ci.hi
    # binomial sd at p = 0.95, n = 400 is 1.1%; the percentile interval undercovers slightly at n = 40
    assert 0.91 <= hits / trials <= 0.98


def _clustered(rng, patients=12, per_patient=10, mu=0.5, between=1.0, within=0.3):
    """Patient effect N(0, between^2) shared by all its images + image noise N(0, within^2)."""
    effect = rng.normal(0, between, patients)
    x = (mu + effect[:, None] + rng.normal(0, within, (patients, per_patient))).ravel()
    return x, np.repeat([f"p{i:02d}" for i in range(patients)], per_patient)


def test_cluster_bootstrap_is_wider_than_naive_and_covers_when_naive_does_not():
    rng = np.random.default_rng(7)
    cov_cluster = cov_naive = 0
    ratios = []
    trials = 200
    for k in range(trials):
        x, pid = _clustered(rng)
        c = bootstrap_ci(x, pid, n_resamples=1000, seed=k)
        n = bootstrap_ci(x, None, n_resamples=1000, seed=k)
        assert c.unit == "patients" and c.n_clusters == 12 and n.unit == "images" and n.n_clusters == 120
        assert c.mean == n.mean == pytest.approx(x.mean())
        ratios.append((c.hi - c.lo) / (n.hi - n.lo))
        cov_cluster += c.lo <= 0.5 <= c.hi
        cov_naive += n.lo <= 0.5 <= n.hi
    # design effect 1 + (m - 1) rho with rho = 1 / 1.09, m = 10: sd of the mean ~2.9x the naive one
    assert np.median(ratios) > 2.3
    assert cov_cluster / trials >= 0.85  # 12 clusters: percentile interval a bit short of 95%
    assert cov_naive / trials < 0.6  # naive intervals ignore the patient effect


def test_bootstrap_replicates_are_the_pooled_mean_of_drawn_patients():
    x = np.array([1.0, 2.0, 3.0, 10.0])
    codes = np.array([0, 0, 0, 1])  # patient 0: mean 2 over 3 images, patient 1: 10 over 1
    reps = cluster_bootstrap_means(x, codes, n_resamples=500, seed=0)
    # draws {0,0} -> 2, {1,1} -> 10, {0,1} -> (6 + 10) / 4 = 4: nothing else is possible
    assert set(np.round(reps, 12)) == {2.0, 4.0, 10.0}
    assert np.mean(reps == 4.0) == pytest.approx(0.5, abs=0.07)


def test_single_patient_falls_back_to_images_and_fixed_seed_is_reproducible():
    x = np.arange(10.0)
    ci = bootstrap_ci(x, ["only"] * 10)
    assert ci.unit == "images" and ci.n_clusters == 10 and ci.lo < 4.5 < ci.hi
    assert bootstrap_ci(x, ["only"] * 10) == ci
    assert bootstrap_ci([5.0]) == bootstrap_ci([5.0]) and bootstrap_ci([5.0]).lo == bootstrap_ci([5.0]).hi == 5.0


def test_percentile_interval_of_uniform_grid():
    lo, hi = percentile_interval(np.arange(1001.0), 0.95)
    assert (lo, hi) == (pytest.approx(25.0), pytest.approx(975.0))
    with pytest.raises(InputError, match="confidence level must be in"):
        percentile_interval(np.arange(3.0), 95)


def test_wilcoxon_hand_cases_and_agreement_with_scipy():
    # d = 1..5 all positive: W- = 0; exact null: only the empty set has rank sum 0 -> p = 2 * 1/32
    stat, p, n = wilcoxon_signed_rank([1.0, 2.0, 3.0, 4.0, 5.0])
    assert (stat, n) == (0.0, 5) and p == pytest.approx(2 / 32)
    # d = -1, 2..5: W- = 1; subsets of {1..5} with rank sum <= 1: {}, {1} -> p = 2 * 2/32
    stat, p, n = wilcoxon_signed_rank([-1.0, 2.0, 3.0, 4.0, 5.0])
    assert (stat, n) == (1.0, 5) and p == pytest.approx(4 / 32)
    # zeros are dropped: same as without them
    assert wilcoxon_signed_rank([0.0, -1.0, 2.0, 0.0, 3.0, 4.0, 5.0]) == (1.0, pytest.approx(4 / 32), 5)
    d = np.random.default_rng(3).normal(0.2, 1.0, 30)
    ref = sps.wilcoxon(d)
    assert wilcoxon_signed_rank(d)[:2] == (pytest.approx(ref.statistic), pytest.approx(ref.pvalue))
    assert np.isnan(wilcoxon_signed_rank(np.zeros(4))[1])


def test_paired_identical_methods_contain_zero_and_shift_is_recovered():
    x, pid = _clustered(np.random.default_rng(1))
    same = paired_comparison(x, x.copy(), pid)
    assert same.diff.mean == 0.0 and same.diff.lo <= 0.0 <= same.diff.hi and np.isnan(same.p_value)
    # B = A - 0.1 + small noise: the difference CI is near 0.1 and excludes 0
    y = x - 0.1 + np.random.default_rng(2).normal(0, 0.02, x.size)
    r = paired_comparison(x, y, pid)
    assert 0 < r.diff.lo < 0.1 < r.diff.hi and r.test_unit == "patients" and r.n_test == 12
    assert r.p_value == pytest.approx(2 / 2**12)  # all 12 patient means positive: exact two-sided p
    # pairing matters: the unpaired per-method intervals overlap, the paired one excludes 0
    a, b = bootstrap_ci(x, pid), bootstrap_ci(y, pid)
    assert a.lo < b.hi
    # fewer patients than the test needs: per-image differences are ranked
    r3 = paired_comparison(x[:30], y[:30], pid[:30])
    assert r3.test_unit == "images" and r3.n_test == 30


def test_cluster_means_and_bad_input():
    assert list(cluster_means([1.0, 3.0, 10.0], ["b", "b", "a"])) == [10.0, 2.0]
    with pytest.raises(InputError, match="got 3 values but 2 cluster"):
        bootstrap_ci([1.0, 2.0, 3.0], ["a", "b"])
    with pytest.raises(InputError, match="NaN/inf"):
        bootstrap_ci([1.0, np.nan])
    with pytest.raises(InputError, match="same images for both methods"):
        paired_comparison([1.0, 2.0], [1.0])
