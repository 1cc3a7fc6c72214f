"""DDIM sampling (Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models").

On a grid of timesteps k_{n-1} > ... > k_0 > clean end (diffusion.grid), with alpha = sqrt(alpha_bar),
sigma = sqrt(1 - alpha_bar):

    x0_hat = f_theta(x_t);  eps_hat = (x_t - alpha_t x0_hat) / sigma_t
    x_s = alpha_s x0_hat + sqrt(sigma_s^2 - s_eta^2) eps_hat + s_eta z,  z ~ N(0, I)       (eq. 12)
    s_eta = eta sqrt((1 - ab_s) / (1 - ab_t)) sqrt(1 - ab_t / ab_s)                          (eq. 16)

eta = 0 is the deterministic DDIM (a first-order solver of the probability-flow ODE, equal to
DPM-Solver++ of order 1); eta = 1 has s_eta^2 = the posterior variance beta~ of the (respaced)
chain and its mean equals the posterior mean q(x_s | x_t, x0_hat), so it IS the ancestral
sampler with variance="beta_tilde" (same noise draws in the same order -> same samples).
The last step goes to the clean end (ab_s = 1): the result is the x0 estimate at k_0.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor

from ..diffusion.denoiser import Denoiser
from ..diffusion.grid import TimeGrid
from .consistency import Consistency, RePaint, constrain_x0, finalize
from .noise import randn_per_image


def predict_x0(denoiser: Denoiser, x: Tensor, k: Tensor, cond: Tensor, base: Tensor, clip: bool) -> Tensor:
    """x0_hat (diffused space) at times k [B] for every image; clip: clamp base + x0_hat to [-1, 1]."""
    z0 = denoiser(x, k, cond)
    return (z0 + base).clamp(-1, 1) - base if clip else z0


def ddim_sigma(eta: float, alpha_t: float, sigma_t: float, alpha_s: float, sigma_s: float) -> float:
    """s_eta of eq. 16 for a step t -> s (s less noisy): eta sqrt((1-ab_s)/(1-ab_t)) sqrt(1 - ab_t/ab_s)."""
    return eta * (sigma_s / sigma_t) * math.sqrt(max(0.0, 1.0 - (alpha_t / alpha_s) ** 2))


@torch.no_grad()
def sample_ddim(
    denoiser: Denoiser,
    cond: Tensor,
    times: TimeGrid | None = None,
    *,
    steps: int | None = None,
    eta: float = 0.0,
    grid: str = "uniform",
    generators: Sequence[torch.Generator],
    clip: bool = True,
    callback: Callable[[int, Tensor, Tensor], None] | None = None,
    consistency: Consistency | None = None,
) -> Tensor:
    """Sample x0 [B, 1, *spatial] (image space, [-1, 1]) given condition planes cond [B, C_cond, *spatial].

    times: the time grid (None: denoiser.time_grid(steps, grid)); steps: network evaluations (None =
    every timestep T); grid: "uniform" (the respaced chain of the ancestral sampler) or "logsnr"
    (see diffusion.grid). eta in [0, 1]: 0 deterministic given
    x_T, 1 = ancestral with the posterior variance. generators: one per image (x_T and the
    per-step noise come from them). clip: clamp each x0 estimate to [-1, 1] in image space.
    callback(i, x, x0_hat) after each step i = 0..steps-1 (x0_hat in image space).
    consistency: a callable image -> image (samplers.consistency) applied to each x0 estimate after
    clipping, before it enters the update, and to the result (the last step returns the estimate).
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta {eta!r}: expected a number in [0, 1]")
    if isinstance(consistency, RePaint):
        raise ValueError("RePaint works with the ancestral sampler only, not ddim")
    g = times if times is not None else denoiser.time_grid(steps, grid)
    shape = (cond.shape[0], 1, *cond.shape[2:])
    base = denoiser.from_diffused(torch.zeros(shape, device=cond.device), cond)
    x = randn_per_image(shape, generators, cond.device).to(cond.dtype)  # float64 cond -> float64 sampling
    a, s = g.alpha.tolist(), g.sigma.tolist()
    for i in range(len(g)):
        z0 = constrain_x0(predict_x0(denoiser, x, g.at(i, x.shape[0], x.device), cond, base, clip), base, consistency)
        if s[i + 1] == 0.0:  # clean end
            x = z0
        else:
            # eps is re-derived from the clipped (and consistency-projected) x0 estimate, not taken from
            # the network (fidelity decision, issue 18; diffusers' DDIMScheduler does the same when it
            # clips): x = a_t x0 + s_t eps stays exact for the pair used in the update, so eta = 1 is
            # exactly the ancestral step with beta~ and a projection acts on the whole update.
            eps = (x - a[i] * z0) / s[i]
            s_eta = ddim_sigma(eta, a[i], s[i], a[i + 1], s[i + 1])
            x = a[i + 1] * z0 + math.sqrt(max(0.0, s[i + 1] ** 2 - s_eta**2)) * eps
            if eta > 0:
                x = x + s_eta * randn_per_image(shape, generators, cond.device).to(x.dtype)
        if callback is not None:
            callback(i, x, z0 + base)
    return finalize(x + base, consistency)
