"""DPM-Solver++ (Lu et al. 2022) against references written here, independently of meddiff.

1. One 2M step for arbitrary fixed x0 predictions, by hand from Algorithm 2 in float64 numpy.
2. The whole sampler with the EXACT denoiser of N(m, s^2) data (test_ancestral.py): x0_hat is
   affine in x_t, so the output is A x_T + b; a numpy reference tracks (A, b) through the updates,
   order 1 and 2 from the paper's formulas and order 3 as the exact integral (Gauss-Legendre
   quadrature) of e^lambda times the quadratic through the last three x0 estimates.
3. The probability-flow ODE with the exact denoiser is exact in distribution: the output
   variance A^2 must approach s^2, faster than DDIM's.
"""

import numpy as np
import pytest
import torch
from test_ancestral import NP_AB, SCHED, S, T, M, ExactGaussianNet
from torch import nn

from meddiff.diffusion.denoiser import DDPMDenoiser
from meddiff.samplers.noise import generators_for, randn_per_image
from meddiff.samplers.ddim import sample_ddim
from meddiff.samplers.dpm_solver import sample_dpm_solver_pp
from meddiff.diffusion.grid import kept_timesteps, time_grid


class FixedX0Net(nn.Module):
    """x0-prediction network whose output at timestep k is a fixed random image (seeded by k)."""

    def forward(self, x, k):
        g = torch.Generator().manual_seed(1000 + int(k[0]))
        return torch.rand(x.shape[0], 1, *x.shape[2:], generator=g) * 2 - 1

    @staticmethod
    def output(k, shape):
        return FixedX0Net()(torch.zeros(shape), torch.tensor([k])).double().numpy()


def test_first_2m_steps_match_algorithm_2_by_hand():
    steps, shape = 5, (2, 1, 4, 4)
    den = DDPMDenoiser(FixedX0Net(), SCHED, "x0")
    xs = []
    sample_dpm_solver_pp(den, torch.zeros(shape), steps=steps, clip=False, generators=generators_for([3, 4]),
                         callback=lambda i, x, x0: xs.append(x.double().numpy()))
    # by hand, float64: t_0 = T-1 ... on the respaced grid, lambda = log(alpha / sigma)
    ks = np.unique(np.round(np.linspace(0, T - 1, steps)).astype(int))[::-1]
    ab = NP_AB[ks]
    alpha, sigma = np.sqrt(ab), np.sqrt(1 - ab)
    lam = np.log(alpha / sigma)
    x = randn_per_image(shape, generators_for([3, 4]), torch.device("cpu")).double().numpy()
    m = [FixedX0Net.output(k, shape) for k in ks]
    h1 = lam[1] - lam[0]
    x1 = sigma[1] / sigma[0] * x - alpha[1] * (np.exp(-h1) - 1) * m[0]  # first step: DPM-Solver++(1)
    h2 = lam[2] - lam[1]
    r2 = h1 / h2
    d2 = (1 + 1 / (2 * r2)) * m[1] - 1 / (2 * r2) * m[0]
    x2 = sigma[2] / sigma[1] * x1 - alpha[2] * (np.exp(-h2) - 1) * d2
    np.testing.assert_allclose(xs[0], x1, rtol=0, atol=2e-6)
    np.testing.assert_allclose(xs[1], x2, rtol=0, atol=2e-6)
    assert np.abs(x2 - (sigma[2] / sigma[1] * x1 - alpha[2] * (np.exp(-h2) - 1) * m[1])).max() > 1e-2  # 2nd order matters
    np.testing.assert_allclose(xs[-1], FixedX0Net.output(0, shape), rtol=0, atol=1e-6)  # clean end = x0_hat(k=0)


def reference_map(ks: np.ndarray, order: int, m=M, s=S) -> tuple[float, float]:
    """(A, b) with output = A x_T + b for the exact Gaussian denoiser; ks decreasing timesteps."""
    ab = NP_AB[ks]
    alpha, sigma = np.sqrt(ab), np.sqrt(1 - ab)
    lam = np.log(alpha / sigma)
    x = np.array([1.0, 0.0])  # x = x[0] * x_T + x[1]
    hist: list[np.ndarray] = []
    nodes, weights = np.polynomial.legendre.leggauss(20)
    for i in range(len(ks)):
        g = s * s * alpha[i] / (ab[i] * s * s + 1 - ab[i])
        mi = g * x + np.array([0.0, m * (1 - g * alpha[i])])  # x0_hat = m + g (x - alpha m)
        hist = [mi, *hist][:order]
        if i == len(ks) - 1:
            return tuple(mi)  # clean end
        h = lam[i + 1] - lam[i]
        ratio = sigma[i + 1] / sigma[i]
        if len(hist) == 1:
            x = ratio * x - alpha[i + 1] * np.expm1(-h) * mi
        elif len(hist) == 2:
            r = (lam[i] - lam[i - 1]) / h
            x = ratio * x - alpha[i + 1] * np.expm1(-h) * ((1 + 1 / (2 * r)) * mi - 1 / (2 * r) * hist[1])
        else:  # sigma_t int e^lambda P(lambda) dlambda, P the quadratic through the last 3 estimates
            pts = lam[i - 2 : i + 1][::-1]  # lambda_i, lambda_{i-1}, lambda_{i-2}
            u = lam[i] + (nodes + 1) / 2 * h
            w = weights * h / 2 * np.exp(u - lam[i + 1])
            integral = np.zeros(2)
            for j in range(3):
                basis = np.prod([(u - pts[q]) / (pts[j] - pts[q]) for q in range(3) if q != j], axis=0)
                integral += np.sum(w * basis) * hist[j]
            x = ratio * x + alpha[i + 1] * integral
    raise AssertionError("unreachable")


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("grid,steps,prediction,residual", [
    ("uniform", 6, "eps", False), ("uniform", 25, "v", True), ("logsnr", 12, "x0", False), ("uniform", None, "eps", True)])
def test_sampler_is_the_reference_affine_map_of_x_T(order, grid, steps, prediction, residual):
    cond = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(1)) - 0.5
    net = ExactGaussianNet(prediction, cond)
    den = DDPMDenoiser(net, SCHED, prediction, residual)
    x = sample_dpm_solver_pp(den, cond, steps=steps, order=order, grid=grid, clip=False, generators=generators_for([8, 9]))
    ks = kept_timesteps(SCHED, steps or T, grid).numpy()[::-1]
    assert net.seen_k == list(ks) and ks[0] == T - 1 and ks[-1] == 0
    A, b = reference_map(ks, order)
    x_T = randn_per_image(x.shape, generators_for([8, 9]), torch.device("cpu")).double()
    # float32: 3M's extrapolation amplifies rounding (in float64 the match is ~1e-14, next test)
    tol = 2e-4 if order == 3 else 5e-5
    torch.testing.assert_close((x - cond if residual else x).double(), A * x_T + b, rtol=0, atol=tol)
    if steps is None:  # every timestep: the data Gaussian itself (up to the k=0 end of the grid)
        assert b == pytest.approx(M, abs=1e-4) and abs(A * A / S**2 - 1) < (0.05 if order == 1 else 0.01)


class Float64ExactDenoiser:
    """The exact Gaussian denoiser as a plain callable in float64 (the samplers only need
    .sched, .from_diffused and __call__ -> (eps, x0))."""

    sched = SCHED

    def time_grid(self, steps, kind="uniform"):  # the Denoiser contract: its own grid
        return time_grid(self.sched, steps, kind)

    def from_diffused(self, z0, cond):
        return z0.double()

    def __call__(self, x, k, cond):
        ab = float(NP_AB[int(k[0])])
        return M + S * S * np.sqrt(ab) / (ab * S * S + 1 - ab) * (x.double() - np.sqrt(ab) * M)


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("grid,steps", [("uniform", 6), ("uniform", 10), ("logsnr", 12), ("logsnr", 40)])
def test_float64_parity_with_the_reference(order, grid, steps):
    cond = torch.zeros(2, 1, 8, 8, dtype=torch.float64)
    x = sample_dpm_solver_pp(Float64ExactDenoiser(), cond, steps=steps, order=order, grid=grid, clip=False,
                             generators=generators_for([8, 9]))
    assert x.dtype == torch.float64
    A, b = reference_map(kept_timesteps(SCHED, steps, grid).numpy()[::-1], order)
    x_T = randn_per_image(x.shape, generators_for([8, 9]), torch.device("cpu")).double()
    torch.testing.assert_close(x, A * x_T + b, rtol=0, atol=1e-12)


def test_order_1_is_ddim_eta_0():
    cond = torch.zeros(2, 1, 8, 8)
    den = DDPMDenoiser(ExactGaussianNet("eps", cond), SCHED, "eps")
    for grid in ("uniform", "logsnr"):
        a = sample_dpm_solver_pp(den, cond, steps=9, order=1, grid=grid, clip=False, generators=generators_for([1, 2]))
        b = sample_ddim(den, cond, steps=9, eta=0.0, grid=grid, clip=False, generators=generators_for([1, 2]))
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def output_variance(sampler, steps, grid="uniform", **kw) -> float:
    """A^2: the output variance for x_T ~ N(0, 1) (the map is affine: fit it on 64 pixels)."""
    cond = torch.zeros(1, 1, 8, 8)
    den = DDPMDenoiser(ExactGaussianNet("eps", cond), SCHED, "eps")
    x = sampler(den, cond, steps=steps, grid=grid, clip=False, generators=generators_for([5]), **kw)
    x_T = randn_per_image(x.shape, generators_for([5]), torch.device("cpu"))
    slope = np.polyfit(x_T.double().flatten().numpy(), x.double().flatten().numpy(), 1)[0]
    return float(slope**2)


def test_dpm_solver_pp_has_a_smaller_variance_error_than_ddim_at_10_to_20_steps():
    """On the log-SNR grid. (On the uniform grid the last intervals are long in lambda, and 2M
    overshoots: at 15 steps both miss s^2 by ~0.1, in opposite directions.)"""
    for steps in (10, 15, 20):
        e_ddim = abs(output_variance(sample_ddim, steps, "logsnr") - S**2)
        e_2m = abs(output_variance(sample_dpm_solver_pp, steps, "logsnr") - S**2)
        assert e_2m < 0.25 * e_ddim, (steps, e_2m, e_ddim)


def test_both_converge_as_steps_grow():
    for sampler in (sample_ddim, sample_dpm_solver_pp):
        errs = [abs(output_variance(sampler, n) - S**2) for n in (20, 50, 100, T)]
        assert errs[0] > errs[1] > errs[2] > errs[3], (sampler.__name__, errs)
    assert abs(output_variance(sample_dpm_solver_pp, T) - S**2) < 0.01 * S**2
    assert abs(output_variance(sample_dpm_solver_pp, 50, "logsnr") - S**2) < 0.02 * S**2


def test_clip_keeps_image_space_samples_in_range():
    cond = torch.full((2, 1, 16, 16), 0.8)
    net = ExactGaussianNet("eps", cond, m=1.5, s=0.5)
    for residual in (False, True):
        den = DDPMDenoiser(net, SCHED, "eps", residual)
        for order in (2, 3):
            x = sample_dpm_solver_pp(den, cond, steps=10, order=order, clip=True, generators=generators_for([3, 4]))
            assert x.min().item() >= -1.0 - 1e-6 and x.max().item() <= 1.0 + 1e-6
            assert x.max().item() == pytest.approx(1.0, abs=1e-6)
        assert sample_dpm_solver_pp(den, cond, steps=10, clip=False, generators=generators_for([3, 4])).max().item() > 2.0


def test_callback_determinism_and_per_image_independence():
    cond = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    den = DDPMDenoiser(ExactGaussianNet("v", cond), SCHED, "v", residual=True)
    seen = []
    x = sample_dpm_solver_pp(den, cond, steps=7, generators=generators_for([1, 2, 3]),
                             callback=lambda i, xt, x0: seen.append((i, x0.clone())))
    assert [i for i, _ in seen] == list(range(7))
    torch.testing.assert_close(seen[-1][1], x, rtol=0, atol=1e-6)
    assert torch.equal(x, sample_dpm_solver_pp(den, cond, steps=7, generators=generators_for([1, 2, 3])))
    den1 = DDPMDenoiser(ExactGaussianNet("v", cond[1:2]), SCHED, "v", residual=True)
    one = sample_dpm_solver_pp(den1, cond[1:2], steps=7, generators=generators_for([2]))
    torch.testing.assert_close(one[0], x[1], rtol=0, atol=1e-6)


def test_bad_arguments_raise():
    cond = torch.zeros(2, 1, 4, 4)
    den = DDPMDenoiser(ExactGaussianNet("eps", cond), SCHED, "eps")
    with pytest.raises(ValueError, match=r"order 4: expected one of \[1, 2, 3\]"):
        sample_dpm_solver_pp(den, cond, steps=3, order=4, generators=generators_for([0, 1]))
    with pytest.raises(ValueError, match="grid 'karras': expected one of"):
        sample_dpm_solver_pp(den, cond, steps=3, grid="karras", generators=generators_for([0, 1]))
    for steps in (0, 201):
        with pytest.raises(ValueError, match=rf"steps must be in 1\.\.200, got {steps}"):
            sample_dpm_solver_pp(den, cond, steps=steps, generators=generators_for([0, 1]))
