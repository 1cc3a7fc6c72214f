"""Ancestral VDM sampling and meddiff's samplers on a VDM, with the exact denoiser of Gaussian data."""

import math

import pytest
import torch
from conftest import gaussian_eps_hat

from meddiff.errors import InputError
from meddiff.samplers import generators_for, sample_ddim, sample_dpm_solver_pp
from meddiff.vdm.loss import level_logits, level_values
from meddiff.vdm.sampling import VDMDenoiser, decode_levels, posterior_mean, posterior_variance, sample_z0
from meddiff.vdm.schedule import alpha, build_gamma, sigma

F64 = torch.float64
MU, S = 0.3, 0.5


def test_posterior_matches_gaussian_conditioning():
    """q(z_s|z_t,x) from alpha_{t|s} = alpha_t/alpha_s, sigma_{t|s}^2 = sigma_t^2 - alpha_{t|s}^2 sigma_s^2."""
    gs, gt = torch.tensor(-3.0, dtype=F64), torch.tensor(1.5, dtype=F64)
    x = torch.tensor([[0.2, -0.7]], dtype=F64)
    eps = torch.tensor([[1.1, -0.3]], dtype=F64)
    z_t = alpha(gt) * x + sigma(gt) * eps
    a_ts = alpha(gt) / alpha(gs)
    v_ts = sigma(gt) ** 2 - a_ts**2 * sigma(gs) ** 2
    mean = a_ts * sigma(gs) ** 2 / sigma(gt) ** 2 * z_t + alpha(gs) * v_ts / sigma(gt) ** 2 * x
    var = v_ts * sigma(gs) ** 2 / sigma(gt) ** 2
    assert torch.allclose(posterior_mean(z_t, eps, gs, gt), mean, atol=1e-14)
    assert torch.allclose(posterior_variance(gs, gt), var, atol=1e-15)


def _z0(steps, seeds, shape=(4, 16)):
    gam = build_gamma("fixed_linear")
    return sample_z0(gaussian_eps_hat(MU, S), gam, (len(seeds), *shape[1:]), steps=steps,
                     generators=generators_for(seeds), dtype=F64)


def test_ancestral_sampler_returns_the_gaussian():
    n = 600
    z0 = _z0(200, range(n))
    x = z0 / alpha(torch.tensor(-13.3, dtype=F64))  # z_0/alpha_0 ~ N(mu, s^2 + e^{gamma_0})
    m, v = float(x.mean()), float(x.var())
    count = x.numel()
    assert abs(m - MU) < 4 * S / math.sqrt(count)
    assert abs(v / S**2 - 1) < 4 * math.sqrt(2 / count) + 0.01


def test_fixed_seeds_are_reproducible_and_batch_independent():
    a = _z0(20, [5, 6, 7])
    b = _z0(20, [5, 6, 7])
    alone = _z0(20, [6])
    assert torch.equal(a, b)
    assert torch.equal(a[1], alone[0])
    assert not torch.equal(a[0], a[2])
    with pytest.raises(InputError, match="steps"):
        _z0(0, [1])


def test_decode_levels_picks_the_nearest_level_and_samples_reproducibly():
    z = level_values(256, F64)[torch.tensor([[3, 200, 255]])] + 0.001
    logits = level_logits(z, torch.tensor(-13.3, dtype=F64), 256)
    assert decode_levels(logits).tolist() == [[3, 200, 255]]
    a = decode_levels(logits, generators_for([1]))
    assert torch.equal(a, decode_levels(logits, generators_for([1])))


def test_vdm_schedule_under_the_denoiser_contract():
    gam = build_gamma("learned_nnet")
    d = VDMDenoiser.from_gamma(gaussian_eps_hat(MU, S), gam, 100)
    t = torch.arange(1, 101, dtype=F64) / 100
    with torch.no_grad():
        assert torch.allclose(d.sched.alpha_bar, torch.sigmoid(-gam(t).double()), rtol=1e-12)
    x_t = torch.randn(3, 1, 4, 4, dtype=F64)
    k = torch.tensor([0, 50, 99])
    x0_hat = d(x_t, k, torch.zeros(3, 0, 4, 4, dtype=F64))
    eps_hat = d.score(x_t, -d.sched.log_snr[k].to(F64), None)  # the network's eps at gamma(t_k)
    ab = d.sched.alpha_bar[[0, 50, 99]].view(-1, 1, 1, 1)
    assert torch.allclose(x_t, ab.sqrt() * x0_hat + (1 - ab).sqrt() * eps_hat, atol=1e-10)


@pytest.mark.parametrize("sampler", ["ddim", "dpm_solver_pp"])
def test_meddiff_samplers_on_a_vdm_return_the_gaussian(sampler):
    d = VDMDenoiser.from_gamma(gaussian_eps_hat(MU, S), build_gamma("fixed_linear"), 1000)
    n = 400
    cond = torch.zeros(n, 0, 4, 4, dtype=F64)
    fn = sample_ddim if sampler == "ddim" else sample_dpm_solver_pp
    x = fn(d, cond, steps=100, generators=generators_for(range(n)), clip=False)
    count = x.numel()
    assert abs(float(x.mean()) - MU) < 4 * S / math.sqrt(count)
    assert abs(float(x.var()) / S**2 - 1) < 4 * math.sqrt(2 / count) + 0.01


@pytest.mark.parametrize("sampler", ["ancestral", "ddim", "dpm_solver_pp"])
def test_meddiff_samplers_on_a_continuous_time_vdm_return_the_gaussian(sampler):
    """A continuous-time VDM samples on its own times (no T = 1000 discretisation): the denoiser is
    called with float times t and evaluates gamma(t) itself."""
    from meddiff.samplers import sample_ancestral

    d = VDMDenoiser.continuous(gaussian_eps_hat(MU, S), build_gamma("fixed_linear"))
    n = 400
    cond = torch.zeros(n, 0, 4, 4, dtype=F64)
    fn = {"ancestral": sample_ancestral, "ddim": sample_ddim, "dpm_solver_pp": sample_dpm_solver_pp}[sampler]
    kw = {"variance": "beta_tilde"} if sampler == "ancestral" else {}
    steps = 1000 if sampler == "ancestral" else 50  # the ancestral chain is exact only on a fine grid
    x = fn(d, cond, d.time_grid(steps), generators=generators_for(range(n)), clip=False, **kw)
    count = x.numel()
    assert abs(float(x.mean()) - MU) < 4 * S / math.sqrt(count)
    assert abs(float(x.var()) / S**2 - 1) < 4 * math.sqrt(2 / count) + 0.01


def test_continuous_grid_times_are_the_models_own():
    from meddiff.vdm.sampling import continuous_grid

    gam = build_gamma("learned_nnet")
    g = continuous_grid(gam, 7)
    t = torch.arange(7, 0, -1, dtype=F64) / 7
    assert torch.equal(g.k, t) and g.k.dtype == F64
    with torch.no_grad():
        assert torch.allclose(g.alpha_bar, torch.sigmoid(-gam(t).double()), rtol=1e-12)
        lg = continuous_grid(gam, 7, "logsnr")
        steps = torch.diff(-torch.log(lg.alpha_bar) + torch.log1p(-lg.alpha_bar))  # gamma at the grid points
    assert lg.k[0] == 1.0 and lg.k[-1] == pytest.approx(1 / 7) and torch.all(torch.diff(lg.k) < 0)
    assert torch.allclose(steps, steps.mean().expand_as(steps), rtol=1e-6)  # evenly spaced in gamma
    with pytest.raises(InputError, match="no finest grid"):
        VDMDenoiser.continuous(gaussian_eps_hat(MU, S), gam).time_grid(None)
