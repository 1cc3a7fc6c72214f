import numpy as np
import pytest

from meddiff.errors import InputError
from meddiff.uncertainty import ConformalTable, apply_table, error_scale, fit_table, interval_coverage


def heteroscedastic(n, rng):
    u = rng.uniform(0.01, 1.0, n)  # true error std proportional to u^2: the scale is informative but mis-scaled
    return u, rng.normal(0, 1, n) * (0.05 + u**2)


def test_split_conformal_covers_each_bin_on_exchangeable_data():
    rng = np.random.default_rng(0)
    u, e = heteroscedastic(40_000, rng)
    table = fit_table(u, e, alpha=0.9, bins=10)
    ut, et = heteroscedastic(40_000, rng)
    half, rms = apply_table(table, ut)
    assert 0.89 <= interval_coverage(et, half) <= 0.91
    k = np.searchsorted(np.asarray(table.edges), ut, side="right")
    for b in range(10):  # per bin, not only pooled (Mondrian conformal)
        assert 0.87 <= interval_coverage(et[k == b], half[k == b]) <= 0.93
        assert 0.85 <= np.sqrt(np.mean(et[k == b] ** 2)) / np.sqrt(np.mean(rms[k == b] ** 2)) <= 1.15


def test_table_round_trips_and_rejects_bad_scale():
    rng = np.random.default_rng(1)
    u, e = heteroscedastic(1000, rng)
    t = fit_table(u, e, note="synthetic")
    assert ConformalTable.from_json(t.to_json()) == t
    with pytest.raises(InputError, match="<= 0"):
        fit_table(np.zeros(100), np.ones(100))
    with pytest.raises(InputError, match="coverage level"):
        fit_table(u, e, alpha=1.5)


def test_error_scale_is_positive_and_larger_at_edges():
    img = -np.ones((32, 32)); img[:, 16:] = 1.0
    u = error_scale(img, img)
    assert (u > 0).all() and u[:, 15:17].mean() > 10 * u[:, :4].mean()
