"""Noise schedules: endpoints, closed forms computed independently, respacing keeps marginals."""

import math

import numpy as np
import pytest
import torch

from meddiff import config as config_mod
from meddiff.diffusion.schedule import DiscreteSchedule, alpha_bar, build_schedule, cosine_betas, linear_betas, log_snr


def paper() -> DiscreteSchedule:
    return build_schedule(config_mod.from_dict({}).diffusion)  # T=2000, linear 1e-4..0.02


def test_linear_betas_endpoints_and_constant_spacing():
    b = linear_betas(2000, 1e-4, 0.02)
    assert b.dtype == torch.float64 and b.shape == (2000,)
    assert b[0].item() == pytest.approx(1e-4, rel=1e-12) and b[-1].item() == pytest.approx(0.02, rel=1e-12)
    d = torch.diff(b)
    assert torch.allclose(d, torch.full_like(d, (0.02 - 1e-4) / 1999), rtol=1e-9, atol=0)


def test_paper_schedule_is_the_default_config():
    s = paper()
    assert s.timesteps == 2000
    assert torch.equal(s.betas, linear_betas(2000, 1e-4, 0.02))


def test_alpha_bar_matches_independent_closed_forms_at_T2000():
    s = paper()
    betas = np.linspace(1e-4, 0.02, 2000)  # independent float64 construction
    loop = np.empty(2000)
    acc = 1.0
    for i, b in enumerate(betas):
        acc *= 1.0 - b
        loop[i] = acc
    via_logs = np.exp(np.cumsum(np.log1p(-betas)))
    ab = s.alpha_bar.numpy()
    np.testing.assert_allclose(ab, loop, rtol=1e-10, atol=0)
    np.testing.assert_allclose(ab, via_logs, rtol=1e-10, atol=0)
    assert ab[0] == pytest.approx(1 - 1e-4, abs=1e-15)  # k = 0 is the paper's t = 1
    assert np.all(np.diff(ab) < 0)


def test_alpha_bar_T_has_the_magnitude_of_exp_minus_sum_beta():
    s = paper()
    sb = float(s.betas.sum())  # 2000 * (1e-4 + 0.02) / 2 = 20.1
    assert sb == pytest.approx(20.1, rel=1e-9)
    ab_T = float(s.alpha_bar[-1])
    sb2 = float((s.betas**2).sum())
    # log(1 - b) = -b - b^2/2 - ...  so  exp(-sum b - sum b^2) < ab_T < exp(-sum b)
    assert math.exp(-sb - sb2) < ab_T < math.exp(-sb)
    assert 1e-9 < ab_T < 2e-9  # x_T is pure noise: signal amplitude sqrt(ab_T) ~ 4e-5


def test_log_snr_is_strictly_decreasing_and_matches_definition():
    for s in (paper(), DiscreteSchedule(cosine_betas(500))):
        ls = s.log_snr
        assert torch.all(torch.diff(ls) < 0)
        ab = s.alpha_bar
        assert torch.allclose(torch.exp(ls), ab / (1 - ab), rtol=1e-9)
    assert torch.isfinite(paper().log_snr).all()


def test_cosine_alpha_bar_follows_its_closed_form():
    T, s = 400, 0.008
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    want = np.array([f(k + 1) / f(0) for k in range(T)])
    got = alpha_bar(cosine_betas(T)).numpy()
    # identical except where beta was capped at 0.999 (the very last steps)
    np.testing.assert_allclose(got[:-5], want[:-5], rtol=1e-9)


@pytest.mark.parametrize("steps", [1, 2, 7, 50, 1999])
def test_respaced_keeps_the_marginals_of_the_kept_steps(steps):
    s = paper()
    kept, r = s.respaced(steps)
    assert kept.dtype == torch.int64 and r.timesteps == len(kept) == steps
    assert torch.all(torch.diff(kept) > 0)
    assert int(kept[-1]) == 1999  # the chain starts from the fully noised step (x_T ~ N(0, I))
    if steps > 1:
        assert int(kept[0]) == 0  # ... and ends on the least noisy one
    # 1 - (1 - ab_k / ab_prev) loses absolute precision ~1e-16 near ab ~ 1e-9
    assert torch.allclose(r.alpha_bar, s.alpha_bar[kept], rtol=1e-10, atol=1e-14)
    assert torch.all((r.betas > 0) & (r.betas < 1))


def test_respaced_full_length_is_the_identity():
    s = paper()
    kept, r = s.respaced(2000)
    assert torch.equal(kept, torch.arange(2000))
    assert torch.allclose(r.betas, s.betas, rtol=1e-9, atol=1e-15)
    assert torch.allclose(r.alpha_bar, s.alpha_bar, rtol=1e-12)


def test_respaced_kept_steps_are_evenly_spread():
    kept, _ = paper().respaced(5)
    assert kept.tolist() == [0, 500, 1000, 1499, 1999]  # round(linspace(0, 1999, 5)), half to even


@pytest.mark.parametrize("steps", [0, -3, 2001])
def test_respaced_rejects_out_of_range_steps(steps):
    with pytest.raises(ValueError, match=r"steps must be in 1\.\.2000"):
        paper().respaced(steps)


def test_log_snr_function_on_known_values():
    ab = torch.tensor([0.5, 0.8, 0.2], dtype=torch.float64)
    assert torch.allclose(log_snr(ab), torch.log(torch.tensor([1.0, 4.0, 0.25], dtype=torch.float64)), atol=1e-12)
