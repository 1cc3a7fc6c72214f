"""Ancestral sampling with the EXACT denoiser of Gaussian data.

If every pixel of x0 is N(m, s^2) (independent of the condition), then x_t is Gaussian and
E[x0 | x_t] = m + s^2 sqrt(ab) / (ab s^2 + 1 - ab) (x_t - sqrt(ab) m) exactly. A fake network
returning the eps/x0/v of that estimate turns the sampler into a linear Gaussian recursion, so
the mean and variance of its samples are known: the mean is m for any chain, and the variance
is obtained by propagating Var through x_{t-1} = A_t x_t + B_t + sigma_t z (computed below in
numpy, independently of meddiff). That variance tends to s^2 as the chain gets finer; with few
steps it is biased (beta_tilde too small, beta too large), which is a property of the method.
"""

import numpy as np
import pytest
import torch
from torch import nn

from meddiff.diffusion.denoiser import DDPMDenoiser
from meddiff.diffusion.schedule import DiscreteSchedule, linear_betas
from meddiff.samplers.ancestral import sample_ancestral
from meddiff.samplers.noise import generators_for, randn_per_image

T = 200
B0, B1 = 1e-4 * 2000 / T, 0.02 * 2000 / T  # the paper's betas scaled to a 200-step chain
SCHED = DiscreteSchedule(linear_betas(T, B0, B1))
NP_AB = np.cumprod(1 - np.linspace(B0, B1, T))
M, S = 0.3, 0.5


class ExactGaussianNet(nn.Module):
    """net(cat(x_t, cond), k) -> the eps / x0 / v of the exact E[z0 | x_t] for z0 ~ N(m, s^2)."""

    def __init__(self, prediction: str, cond: torch.Tensor, m=M, s=S):
        super().__init__()
        self.prediction, self.cond, self.m, self.s = prediction, cond, m, s
        self.seen_k: list[int] = []

    def forward(self, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        assert x.shape[1] == 1 + self.cond.shape[1] and torch.equal(x[:, 1:], self.cond)
        assert torch.all(k == k[0])
        self.seen_k.append(int(k[0]))
        ab = float(NP_AB[int(k[0])])
        xt = x[:, :1].double()
        x0 = self.m + self.s**2 * np.sqrt(ab) / (ab * self.s**2 + 1 - ab) * (xt - np.sqrt(ab) * self.m)
        eps = (xt - np.sqrt(ab) * x0) / np.sqrt(1 - ab)
        out = {"x0": x0, "eps": eps, "v": np.sqrt(ab) * eps - np.sqrt(1 - ab) * x0}[self.prediction]
        return out.float()


def chain_moments(steps: int, variance: str, m=M, s=S) -> tuple[float, float]:
    """Mean and variance of the sampler's output for N(m, s^2) data, by exact recursion."""
    kept = np.unique(np.round(np.linspace(0, T - 1, steps)).astype(int)) if steps > 1 else np.array([T - 1])
    ab = NP_AB[kept]
    prev = np.concatenate([[1.0], ab[:-1]])
    beta = 1 - ab / prev
    mu, var = 0.0, 1.0  # x_T ~ N(0, 1)
    for i in reversed(range(len(kept))):
        g = s * s * np.sqrt(ab[i]) / (ab[i] * s * s + 1 - ab[i])  # x0_hat = m + g (x - sqrt(ab) m)
        c0 = np.sqrt(prev[i]) * beta[i] / (1 - ab[i])
        ct = np.sqrt(1 - beta[i]) * (1 - prev[i]) / (1 - ab[i])
        a, b = c0 * g + ct, c0 * m * (1 - g * np.sqrt(ab[i]))
        sigma2 = beta[i] if variance == "beta" else (1 - prev[i]) / (1 - ab[i]) * beta[i]
        mu, var = a * mu + b, a * a * var + (sigma2 if i > 0 else 0.0)
    return mu, var


def test_reference_recursion_converges_to_the_data_distribution():
    """Sanity of the reference itself: a finer chain gets closer to N(m, s^2)."""
    for variance in ("beta", "beta_tilde"):
        errs = [abs(chain_moments(n, variance)[1] - S * S) for n in (20, 50, 200)]
        assert errs[0] > errs[1] > errs[2]
        assert chain_moments(200, variance)[0] == pytest.approx(M, abs=1e-6)
    assert abs(chain_moments(200, "beta")[1] / S**2 - 1) < 0.05
    assert abs(chain_moments(200, "beta_tilde")[1] / S**2 - 1) < 0.10


IMAGES, H, W = 3, 64, 64  # 12288 pixels: standard error 0.9% of s for the mean, 1.3% of s^2 for the variance


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("steps,variance", [(None, "beta_tilde"), (50, "beta_tilde"), (50, "beta")])
def test_exact_denoiser_samples_have_the_data_mean_and_chain_variance(prediction, residual, steps, variance):
    g = torch.Generator().manual_seed(11)
    cond = torch.rand(IMAGES, 1, H, W, generator=g) - 0.5  # residual mode: x0 = cond + N(m, s^2)
    net = ExactGaussianNet(prediction, cond)
    den = DDPMDenoiser(net, SCHED, prediction, residual)
    x = sample_ancestral(den, cond, steps=steps, variance=variance, clip=False,
                         generators=generators_for([100, 101, 102]))
    assert x.shape == (IMAGES, 1, H, W) and x.dtype == torch.float32
    n = len(net.seen_k)
    assert n == (steps or T) and net.seen_k[0] == T - 1 and net.seen_k[-1] == 0
    z = (x - cond if residual else x).double()
    want_mean, want_var = chain_moments(steps or T, variance)
    count = z.numel()
    assert abs(z.mean().item() - want_mean) < 4.5 * np.sqrt(want_var / count)
    assert abs(z.var().item() - want_var) < 4.5 * want_var * np.sqrt(2 / count)
    if steps is None:  # the full chain reproduces the data distribution up to its discretisation
        assert abs(z.var().item() / S**2 - 1) < 0.12


def test_few_steps_beta_tilde_underestimates_the_variance():
    """Documented bias (not a bug): 20 respaced steps, posterior variance -> ~half of s^2."""
    cond = torch.zeros(2, 1, 64, 64)
    den = DDPMDenoiser(ExactGaussianNet("eps", cond), SCHED, "eps")
    x = sample_ancestral(den, cond, steps=20, variance="beta_tilde", clip=False, generators=generators_for([1, 2]))
    assert x.var().item() < 0.65 * S**2
    assert abs(x.var().item() - chain_moments(20, "beta_tilde")[1]) < 5 * S**2 * np.sqrt(2 / x.numel())


def test_single_step_returns_the_denoiser_mean_from_pure_noise():
    cond = torch.zeros(2, 1, 64, 64)
    den = DDPMDenoiser(ExactGaussianNet("x0", cond), SCHED, "x0")
    x = sample_ancestral(den, cond, steps=1, clip=False, generators=generators_for([1, 2]))
    # from x_T (ab ~ 2e-9) the best estimate is the data mean, with no spread
    assert den.net.seen_k == [T - 1]
    assert abs(x.mean().item() - M) < 1e-3 and x.std().item() < 1e-3


def test_clip_keeps_image_space_samples_in_range():
    cond = torch.full((2, 1, 32, 32), 0.8)
    net = ExactGaussianNet("eps", cond, m=1.5, s=0.5)  # most of the data lies above +1
    for residual in (False, True):
        den = DDPMDenoiser(net, SCHED, "eps", residual)
        x = sample_ancestral(den, cond, steps=10, clip=True, generators=generators_for([3, 4]))
        assert x.min().item() >= -1.0 - 1e-6 and x.max().item() <= 1.0 + 1e-6
        assert x.max().item() == pytest.approx(1.0, abs=1e-6) and x.mean().item() > 0.6
        unclipped = sample_ancestral(den, cond, steps=10, clip=False, generators=generators_for([3, 4]))
        assert unclipped.max().item() > 2.0


def test_callback_sees_every_step_and_the_last_estimate_is_the_sample():
    cond = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    den = DDPMDenoiser(ExactGaussianNet("v", cond), SCHED, "v", residual=True)
    seen = []
    x = sample_ancestral(den, cond, steps=7, clip=False, generators=generators_for([5]),
                         callback=lambda i, xt, x0: seen.append((i, x0.clone())))
    assert [i for i, _ in seen] == list(range(7))
    torch.testing.assert_close(seen[-1][1], x, rtol=1e-5, atol=1e-5)


def test_same_generators_same_sample_and_per_image_independence():
    cond = torch.zeros(3, 1, 8, 8)
    den = DDPMDenoiser(ExactGaussianNet("eps", cond), SCHED, "eps")
    a = sample_ancestral(den, cond, steps=5, generators=generators_for([1, 2, 3]))
    b = sample_ancestral(den, cond, steps=5, generators=generators_for([1, 2, 3]))
    assert torch.equal(a, b)
    den1 = DDPMDenoiser(ExactGaussianNet("eps", cond[1:2]), SCHED, "eps")
    c = sample_ancestral(den1, cond[1:2], steps=5, generators=generators_for([2]))
    torch.testing.assert_close(c[0], a[1], rtol=0, atol=1e-6)
    assert not torch.allclose(a[0], a[1])


def test_bad_arguments_raise():
    cond = torch.zeros(2, 1, 4, 4)
    den = DDPMDenoiser(ExactGaussianNet("eps", cond), SCHED, "eps")
    with pytest.raises(ValueError, match="one generator per image: 1 generators for batch 2"):
        sample_ancestral(den, cond, steps=3, generators=generators_for([0]))
    with pytest.raises(ValueError, match="variance 'fixed_large'"):
        sample_ancestral(den, cond, steps=3, variance="fixed_large", generators=generators_for([0, 1]))
    with pytest.raises(ValueError, match=r"steps must be in 1\.\.200"):
        sample_ancestral(den, cond, steps=201, generators=generators_for([0, 1]))


def test_randn_per_image_uses_each_generator_in_turn():
    gens = generators_for([7, 8])
    x = randn_per_image((2, 1, 3, 3), gens, torch.device("cpu"))
    assert torch.equal(x[0], torch.randn((1, 3, 3), generator=torch.Generator().manual_seed(7)))
    assert torch.equal(x[1], torch.randn((1, 3, 3), generator=torch.Generator().manual_seed(8)))
