"""DDIM (Song et al. 2021) with the EXACT denoiser of Gaussian data (see test_ancestral.py).

With z0 ~ N(m, s^2) per pixel, x0_hat is affine in x_t, so every DDIM step is
x_s = A x_t + b + s_eta z and the output mean / variance follow from a recursion computed here in
numpy from eq. 12 and eq. 16, independently of meddiff. For eta = 0 the map x_T -> x0 is affine
and deterministic, so each pixel is checked against it (no sampling error).
"""

import numpy as np
import pytest
import torch
from test_ancestral import NP_AB, SCHED, S, T, M, ExactGaussianNet, chain_moments

from meddiff.diffusion.denoiser import DDPMDenoiser
from meddiff.samplers.ancestral import sample_ancestral
from meddiff.samplers.noise import generators_for, randn_per_image
from meddiff.samplers.ddim import sample_ddim


def grid_alpha_bar(steps: int | None) -> np.ndarray:
    """alpha_bar along the respaced grid, noisiest first, then the clean end (1.0)."""
    n = steps or T
    kept = np.unique(np.round(np.linspace(0, T - 1, n)).astype(int)) if n > 1 else np.array([T - 1])
    return np.concatenate([NP_AB[kept][::-1], [1.0]])


def ddim_moments(steps: int | None, eta: float, m=M, s=S) -> tuple[float, float, float]:
    """(A, mean, var) of the DDIM output for x_T ~ N(0, 1): output = A x_T + b (+ noise when eta > 0)."""
    ab = grid_alpha_bar(steps)
    A, b, noise = 1.0, 0.0, 0.0
    for i in range(len(ab) - 1):
        at, st, an, sn = np.sqrt(ab[i]), np.sqrt(1 - ab[i]), np.sqrt(ab[i + 1]), np.sqrt(1 - ab[i + 1])
        g = s * s * at / (at * at * s * s + st * st)  # x0_hat = g x + c0,  c0 = m (1 - g at)
        c0 = m * (1 - g * at)
        sig = eta * np.sqrt((1 - ab[i + 1]) / (1 - ab[i]) * (1 - ab[i] / ab[i + 1]))  # eq. 16
        ce = np.sqrt(max(sn * sn - sig * sig, 0.0))  # eq. 12: x_s = an x0 + ce (x - at x0)/st + sig z
        ax = an * g + ce * (1 - at * g) / st
        bx = an * c0 - ce * at * c0 / st
        A, b, noise = ax * A, ax * b + bx, ax * ax * noise + sig * sig
    return A, b, A * A + noise


IMAGES, H, W = 3, 64, 64


def gaussian_setup(prediction="eps", residual=False, n=IMAGES, h=H, w=W):
    cond = torch.rand(n, 1, h, w, generator=torch.Generator().manual_seed(11)) - 0.5
    net = ExactGaussianNet(prediction, cond)
    return net, DDPMDenoiser(net, SCHED, prediction, residual), cond


def test_reference_recursion_eta1_is_the_beta_tilde_chain():
    """eq. 12 with eq. 16 at eta=1 is the posterior step: same moments as the ancestral recursion."""
    for steps in (None, 20, 5):
        _, mean, var = ddim_moments(steps, 1.0)
        want = chain_moments(steps or T, "beta_tilde")
        assert mean == pytest.approx(want[0], abs=1e-9) and var == pytest.approx(want[1], rel=1e-9)


@pytest.mark.parametrize("prediction,residual,steps", [("eps", False, None), ("x0", True, 20), ("v", False, 7)])
def test_eta0_is_the_deterministic_affine_map_of_x_T(prediction, residual, steps):
    net, den, cond = gaussian_setup(prediction, residual, n=2, h=16, w=16)
    gens = [100, 101]
    x = sample_ddim(den, cond, steps=steps, eta=0.0, clip=False, generators=generators_for(gens))
    x_T = randn_per_image(x.shape, generators_for(gens), torch.device("cpu")).double()
    A, b, _ = ddim_moments(steps, 0.0)
    z = (x - cond if residual else x).double()
    torch.testing.assert_close(z, A * x_T + b, rtol=0, atol=2e-5)
    assert len(net.seen_k) == (steps or T) and net.seen_k[0] == T - 1 and net.seen_k[-1] == 0
    if steps is None:  # 200 steps: the data distribution up to the first-order discretisation
        assert b == pytest.approx(M, abs=1e-4) and abs(A * A / S**2 - 1) < 0.05  # x_T ~ N(0, 1), not exactly the marginal


@pytest.mark.parametrize("eta,steps", [(1.0, None), (0.5, 20), (1.0, 10)])
def test_stochastic_ddim_has_the_data_mean_and_the_reference_variance(eta, steps):
    _, den, cond = gaussian_setup("eps", residual=True)
    x = sample_ddim(den, cond, steps=steps, eta=eta, clip=False, generators=generators_for([7, 8, 9]))
    z = (x - cond).double()
    _, want_mean, want_var = ddim_moments(steps, eta)
    assert want_mean == pytest.approx(M, abs=1e-6)
    count = z.numel()
    assert abs(z.mean().item() - want_mean) < 4.5 * np.sqrt(want_var / count)
    assert abs(z.var().item() - want_var) < 4.5 * want_var * np.sqrt(2 / count)
    if steps is None:
        assert abs(z.var().item() / S**2 - 1) < 0.12


@pytest.mark.parametrize("steps", [None, 20])
def test_eta1_equals_ancestral_beta_tilde_sample_for_sample(steps):
    """eta=1 has s_eta^2 = beta~ and mean = posterior mean (algebraically), and both samplers draw
    x_T then one N(0, I) per step except the last from the same generators: same samples up to
    float32 rounding of differently arranged coefficients."""
    _, den, cond = gaussian_setup("v", residual=False)
    a = sample_ddim(den, cond, steps=steps, eta=1.0, clip=False, generators=generators_for([1, 2, 3]))
    b = sample_ancestral(den, cond, steps=steps, variance="beta_tilde", clip=False, generators=generators_for([1, 2, 3]))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)  # measured: max 1.1e-6 (full chain)
    assert a.std().item() > 0.3  # not a degenerate (noise-free) comparison


def test_clip_keeps_image_space_samples_in_range():
    cond = torch.full((2, 1, 16, 16), 0.8)
    net = ExactGaussianNet("eps", cond, m=1.5, s=0.5)
    for residual in (False, True):
        den = DDPMDenoiser(net, SCHED, "eps", residual)
        x = sample_ddim(den, cond, steps=10, eta=0.3, clip=True, generators=generators_for([3, 4]))
        assert x.min().item() >= -1.0 - 1e-6 and x.max().item() <= 1.0 + 1e-6
        assert x.max().item() == pytest.approx(1.0, abs=1e-6)
        assert sample_ddim(den, cond, steps=10, clip=False, generators=generators_for([3, 4])).max().item() > 2.0


def test_callback_and_determinism():
    _, den, cond = gaussian_setup("x0", residual=True, n=2, h=8, w=8)
    seen = []
    x = sample_ddim(den, cond, steps=6, eta=0.5, clip=False, generators=generators_for([5, 6]),
                    callback=lambda i, xt, x0: seen.append((i, x0.clone())))
    assert [i for i, _ in seen] == list(range(6))
    torch.testing.assert_close(seen[-1][1], x, rtol=0, atol=1e-6)
    assert torch.equal(x, sample_ddim(den, cond, steps=6, eta=0.5, clip=False, generators=generators_for([5, 6])))
    other = sample_ddim(den, cond, steps=6, eta=0.5, clip=False, generators=generators_for([5, 7]))
    assert torch.equal(other[0], x[0]) and not torch.allclose(other[1], x[1])


def test_bad_arguments_raise():
    _, den, cond = gaussian_setup(n=2, h=4, w=4)
    with pytest.raises(ValueError, match=r"eta 1\.5: expected a number in \[0, 1\]"):
        sample_ddim(den, cond, steps=3, eta=1.5, generators=generators_for([0, 1]))
    with pytest.raises(ValueError, match="grid 'cosine': expected one of"):
        sample_ddim(den, cond, steps=3, grid="cosine", generators=generators_for([0, 1]))
    with pytest.raises(ValueError, match="one generator per image: 1 generators for batch 2"):
        sample_ddim(den, cond, steps=3, generators=generators_for([0]))
