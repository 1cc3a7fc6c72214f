"""DDPM equations against independent closed forms (float64 numpy), and their statistics."""

import numpy as np
import pytest
import torch

from meddiff.diffusion import ddpm
from meddiff.diffusion.schedule import DiscreteSchedule, linear_betas

T = 2000
SCHED = DiscreteSchedule(linear_betas(T, 1e-4, 0.02))
NP_BETAS = np.linspace(1e-4, 0.02, T)
NP_AB = np.cumprod(1 - NP_BETAS)


def _np_ab_prev(k: int) -> float:
    return 1.0 if k == 0 else float(NP_AB[k - 1])


def test_q_sample_mean_and_variance_over_many_eps():
    n = 20_000
    ks = torch.tensor([0, 300, 1000, 1999])
    x0 = torch.tensor([0.7, -0.3, 0.5, 1.0]).view(4, 1, 1).expand(4, 1, n)
    g = torch.Generator().manual_seed(0)
    eps = torch.randn(4, 1, n, generator=g)
    xt = ddpm.q_sample(SCHED, x0, ks, eps)
    assert xt.dtype == torch.float32 and xt.shape == (4, 1, n)
    for i, k in enumerate(ks.tolist()):
        ab = NP_AB[k]
        want_mean, want_var = np.sqrt(ab) * x0[i, 0, 0].item(), 1 - ab
        sample = xt[i].double()
        # 5 standard errors of the mean and of the variance estimate
        assert abs(sample.mean().item() - want_mean) < 5 * np.sqrt(want_var / n)
        assert abs(sample.var().item() - want_var) < 5 * want_var * np.sqrt(2 / n)


def test_q_sample_is_the_interpolation_formula_per_sample():
    x0 = torch.randn(3, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    eps = torch.randn(3, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    k = torch.tensor([5, 0, 1999])
    got = ddpm.q_sample(SCHED, x0, k, eps)
    for i, kk in enumerate(k.tolist()):
        want = np.sqrt(NP_AB[kk]) * x0[i].numpy() + np.sqrt(1 - NP_AB[kk]) * eps[i].numpy()
        np.testing.assert_allclose(got[i].numpy(), want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("k", [0, 1, 17, 999, 1998, 1999])
def test_posterior_matches_gaussian_conditioning_of_the_joint(k):
    """q(x_{t-1} | x_t, x0) from the joint Gaussian of (x_{t-1}, x_t) given x0:
    x_{t-1} ~ N(sqrt(ab_prev) x0, 1 - ab_prev), x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) e."""
    beta, ab, ab_prev = NP_BETAS[k], NP_AB[k], _np_ab_prev(k)
    x0 = np.array([-0.8, 0.1, 0.9])
    xt = np.array([0.3, -1.2, 2.0])
    mu_prev, var_prev = np.sqrt(ab_prev) * x0, 1 - ab_prev
    mu_t, var_t = np.sqrt(ab) * x0, 1 - ab
    cov = np.sqrt(1 - beta) * var_prev
    want_mean = mu_prev + cov / var_t * (xt - mu_t)
    want_var = var_prev - cov**2 / var_t
    kk = torch.full((3,), k)
    got_mean = ddpm.q_posterior_mean(SCHED, torch.tensor(x0).view(3, 1), torch.tensor(xt).view(3, 1), kk)
    np.testing.assert_allclose(got_mean.view(-1).numpy(), want_mean, rtol=1e-9, atol=1e-12)
    assert ddpm.posterior_variance(SCHED)[k].item() == pytest.approx(want_var, rel=1e-9, abs=1e-15)


def test_posterior_at_the_first_step_returns_x0_with_zero_variance():
    x0, xt = torch.tensor([[0.25]], dtype=torch.float64), torch.tensor([[3.0]], dtype=torch.float64)
    assert ddpm.q_posterior_mean(SCHED, x0, xt, torch.tensor([0])).item() == pytest.approx(0.25, abs=1e-12)
    assert ddpm.posterior_variance(SCHED)[0].item() == 0.0


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_p_mean_with_true_eps_equals_posterior_mean_with_true_x0(dtype):
    """The paper's mu_theta = 1/sqrt(alpha_t)(x_t - beta_t/sqrt(1-ab_t) eps) is mu~_t(x_t, x0)
    when eps_theta is the noise that made x_t from x0 (Ho et al. eq. 10-11)."""
    g = torch.Generator().manual_seed(3)
    x0 = torch.rand(6, 1, 5, 5, generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn(6, 1, 5, 5, generator=g, dtype=torch.float64)
    k = torch.tensor([0, 1, 10, 500, 1500, 1999])
    xt = ddpm.q_sample(SCHED, x0, k, eps)
    a = ddpm.p_mean_from_eps(SCHED, xt.to(dtype), k, eps.to(dtype))
    b = ddpm.q_posterior_mean(SCHED, x0.to(dtype), xt.to(dtype), k)
    tol = 1e-10 if dtype == torch.float64 else 2e-5
    assert a.dtype == dtype
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def test_parameterisation_conversions_round_trip():
    g = torch.Generator().manual_seed(4)
    x0 = torch.rand(5, 1, 6, 6, generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn(5, 1, 6, 6, generator=g, dtype=torch.float64)
    k = torch.tensor([0, 3, 700, 1400, 1999])
    xt = ddpm.q_sample(SCHED, x0, k, eps)
    torch.testing.assert_close(ddpm.eps_from_x0(SCHED, xt, k, x0), eps, rtol=1e-8, atol=1e-8)
    # at k = 1999, sqrt(ab) ~ 4e-5 amplifies rounding of x_t by ~2.5e4 when solving for x0
    torch.testing.assert_close(ddpm.x0_from_eps(SCHED, xt, k, eps), x0, rtol=0, atol=1e-10)
    v = ddpm.v_target(SCHED, x0, k, eps)
    torch.testing.assert_close(ddpm.x0_from_v(SCHED, xt, k, v), x0, rtol=1e-10, atol=1e-10)
    # v = sqrt(ab) eps - sqrt(1-ab) x0 by definition
    ab = torch.tensor(NP_AB[k.numpy()]).view(-1, 1, 1, 1)
    torch.testing.assert_close(v, ab.sqrt() * eps - (1 - ab).sqrt() * x0, rtol=1e-12, atol=1e-12)
    for pred, out in (("eps", eps), ("x0", x0), ("v", v)):
        e_hat, x_hat = ddpm.split_prediction(SCHED, pred, out, xt, k)
        torch.testing.assert_close(x_hat, x0, rtol=0, atol=1e-9)
        torch.testing.assert_close(e_hat, eps, rtol=0, atol=1e-9)


def test_split_prediction_rejects_unknown_parameterisation():
    z = torch.zeros(1, 1, 2, 2)
    with pytest.raises(ValueError, match="unknown prediction 'score'"):
        ddpm.split_prediction(SCHED, "score", z, z, torch.tensor([0]))


def test_schedule_values_follow_the_image_device_and_dtype():
    x = torch.ones(2, 1, 3, dtype=torch.float32)
    out = ddpm.q_sample(SCHED, x, torch.tensor([0, 1999]), torch.zeros_like(x))
    assert out.dtype == torch.float32
    assert out[0, 0, 0].item() == pytest.approx(np.sqrt(NP_AB[0]), rel=1e-6)
    assert out[1, 0, 0].item() == pytest.approx(np.sqrt(NP_AB[1999]), rel=1e-5)
