import shutil

import numpy as np
import pytest

from meddiff.errors import InputError
from meddiff.uncertainty import (anatomy_mask, calibration_for, calibration_for_request, feature_stack,
                                 fit_calibration, fit_regressor, interval_report, read_calibrations, store_calibration)
from meddiff.uncertainty.features import FEATURES, noise_sigma


def test_regressor_recovers_a_log_linear_error_model():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(len(FEATURES), 50_000))
    sigma = np.exp(-3.0 + 0.8 * x[0] - 0.5 * x[2])
    reg = fit_regressor(x, rng.normal(size=x.shape[1]) * sigma, ("grad_restored", "change"))
    # log |e| = log sigma + log |z|, E log|z| = -0.635 for z ~ N(0, 1): slopes exact, intercept shifted
    assert reg.weights[1] == pytest.approx(0.8, abs=0.02) and reg.weights[2] == pytest.approx(-0.5, abs=0.02)
    assert reg.weights[0] == pytest.approx(-3.635, abs=0.03)
    with pytest.raises(InputError, match="expected names"):
        fit_regressor(x, x[0], ("no_such_feature",))


def test_noise_estimate_and_feature_stack():
    rng = np.random.default_rng(1)
    assert noise_sigma(rng.normal(0, 0.05, (96, 96))) == pytest.approx(0.05, rel=0.1)
    img = np.full((32, 32), -1.0); img[8:24, 8:24] = 0.5
    f = feature_stack(img, img)
    assert f.shape == (len(FEATURES), 32, 32) and np.isfinite(f).all()
    g = f[FEATURES.index("grad_restored")]
    assert g[8, 16] > g[16, 16] + 3  # edges have a far larger gradient feature than the flat inside
    with pytest.raises(InputError, match="one 2D shape"):
        feature_stack(img, img[:16])


def test_anatomy_mask_fills_dark_holes_and_drops_specks():
    t = np.full((64, 64), -1.0)
    t[10:50, 10:50] = 0.6
    t[25:35, 25:35] = -1.0  # a dark ventricle inside
    t[2, 60] = -0.5  # a lone noise pixel outside
    m = anatomy_mask(t)
    assert m[30, 30] and m[15, 15] and not m[2, 60] and not m[60, 5]


def _toy(rng, n=8, size=48):
    """Truths, and 'restorations' whose error std grows with the local gradient (as SR errors do)."""
    from scipy import ndimage

    truths, rows = [], []
    for _ in range(n):
        t = ndimage.gaussian_filter(rng.normal(size=(size, size)), 3)
        t = np.clip(t / np.abs(t).max(), -0.8, 1)
        grad = np.hypot(*np.gradient(t))
        r = t + rng.normal(size=t.shape) * (0.005 + 2 * grad)
        truths.append(t); rows.append((r, None, ndimage.gaussian_filter(t, 1.5), None))
    return truths, rows


def test_fitted_calibration_covers_exchangeable_images_and_round_trips(tmp_path):
    from meddiff.commands.demo import SAMPLED_CHECKPOINT

    rng = np.random.default_rng(2)
    truths, rows = _toy(rng, 16)
    cal = fit_calibration(rows, truths, sampler="posterior_mean 1", data="toy images")
    assert cal.levels == (0.8, 0.9, 0.95) and cal.regressor is not None
    t2, r2 = _toy(rng, 8)
    err, pred, cov, masks = [], [], [], []
    for (r, s, c, lr), t in zip(r2, t2):
        lo, hi, rms = cal.interval(0.9, r, c, lr, s)
        assert (lo <= r).all() and (r <= hi).all()
        err.append(r - t); pred.append(rms); cov.append((lo <= t) & (t <= hi)); masks.append(anatomy_mask(t))
    rep = interval_report(*(np.stack(a) for a in (err, pred, cov, masks)))
    assert 0.86 <= rep.coverage <= 0.94 and rep.spearman > 0.4 and rep.worst_ratio < 1.5, rep
    assert "toy images" in cal.sentence(0.9) and "90%" in cal.sentence(0.9)
    model = tmp_path / "m.safetensors"
    shutil.copy(SAMPLED_CHECKPOINT, model)
    assert read_calibrations(model) == []
    with pytest.raises(InputError, match="uncertainty_card"):
        calibration_for(model, "posterior_mean 1", 1)
    store_calibration(model, cal)
    store_calibration(model, cal)  # same sampler: replaced, not added
    (back,) = read_calibrations(model)
    assert back.to_dict() == cal.to_dict()
    with pytest.raises(InputError, match="dpm_solver_pp 10 with 4 sample.*has one for --sampler posterior_mean"):
        calibration_for(model, "dpm_solver_pp 10", 4)
    with pytest.raises(InputError, match="calibrated at 0.8, 0.9, 0.95 only"):
        calibration_for_request(model, "posterior_mean 1", 1, 0.7)
    with pytest.raises(InputError, match="coverage level"):
        calibration_for_request(model, "posterior_mean 1", 1, 1.5)
