"""Ancestral sampling of the conditional DDPM (Ho et al. 2020, Algorithm 2; Med-cDiff):

    x_T ~ N(0, I);  x_{t-1} = mu_theta(x_t, y, t) + sigma_t z,  z ~ N(0, I) (z = 0 at the last step)

on the full chain (T steps) or a respaced one (any number of steps, Nichol & Dhariwal 2021): the
chain through the points of a time grid (diffusion.grid.chain_schedule; the denoiser's own
grid, so a continuous-time VDM runs on its own times).
mu_theta is computed as the posterior mean q(x_{t-1} | x_t, x0_hat), which for the full chain
equals the paper's 1/sqrt(alpha_t)(x_t - beta_t/sqrt(1-ab_t) eps_theta) exactly.
sigma_t^2 = beta_t (the paper) or the posterior variance beta~_t.

Data consistency (samplers.consistency): a callable applied to every clipped x0 estimate in image
space, or RePaint (Lugmayr et al. 2022, Algorithm 1): the known region of each x_{t-1} is replaced by
sqrt(ab_{t-1}) x0_known + sqrt(1 - ab_{t-1}) eps (in the diffused space, i.e. x0_known - y in
residual mode), and with resample U > 1 each step is repeated U times, jumping back
x_t ~ q(x_t | x_{t-1}) in between (not at the last step, whose result no longer depends on noise).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from ..diffusion.ddpm import posterior_variance, q_posterior_mean
from ..diffusion.denoiser import Denoiser
from ..diffusion.grid import TimeGrid, chain_schedule
from .consistency import Consistency, RePaint, constrain_x0, finalize, jump_back, noised_known
from .noise import randn_per_image


@torch.no_grad()
def sample_ancestral(
    denoiser: Denoiser,
    cond: Tensor,
    times: TimeGrid | None = None,
    *,
    steps: int | None = None,
    variance: str = "beta",
    generators: Sequence[torch.Generator],
    clip: bool = True,
    callback: Callable[[int, Tensor, Tensor], None] | None = None,
    consistency: Consistency | RePaint | None = None,
) -> Tensor:
    """Sample x0 [B, 1, *spatial] (image space, [-1, 1]) given condition planes cond [B, C_cond, *spatial].

    times: the time grid (None: denoiser.time_grid(steps), the respaced chain of `steps` steps, None =
    the full T). generators: one per image.
    variance: "beta" (sigma_t^2 = beta_t, the paper) or "beta_tilde" (posterior variance).
    clip: clamp each x0 estimate to [-1, 1] in image space (Ho et al. do this when sampling).
    callback(i, x_t, x0_hat) is called after each step (x0_hat in image space).
    consistency: None, a callable image -> image applied to each x0 estimate after clipping and to
    the result (samplers.consistency), or a RePaint (inpainting; resample U network calls per step).
    """
    if variance not in ("beta", "beta_tilde"):
        raise ValueError(f"variance {variance!r}: expected 'beta' or 'beta_tilde'")
    times = times if times is not None else denoiser.time_grid(steps, "uniform")
    kept, sched = times.k.flip(0), chain_schedule(times)
    var = sched.betas if variance == "beta" else posterior_variance(sched)
    shape = (cond.shape[0], 1, *cond.shape[2:])
    base = denoiser.from_diffused(torch.zeros(shape, device=cond.device), cond)
    # dtype (fidelity decision, issue 18): the chain runs in cond's dtype, as DDIM and DPM-Solver++ do
    # (float32 in use; float64 condition planes give a float64 chain, e.g. for parity tests). The
    # schedule's coefficients are float64 and are cast to that dtype where they meet x.
    x = randn_per_image(shape, generators, cond.device).to(cond.dtype)
    n = len(kept)
    repaint = consistency if isinstance(consistency, RePaint) else None
    on_x0 = None if repaint is not None else consistency
    if repaint is not None:
        z_known = repaint.known.to(x.device, x.dtype) - base  # known image in the diffused space
        hole = repaint.mask.to(x.device) > 0.5
        ab = sched.alpha_bar.tolist()
    for i in reversed(range(n)):
        rounds = repaint.resample if repaint is not None and i > 0 else 1
        for u in range(rounds):
            # the network sees the original timestep kept[i]; alpha_bar there equals the respaced
            # chain's alpha_bar[i], so x0_hat is the same whichever schedule converts it.
            z0 = _x0_estimate(denoiser, x, times.at(n - 1 - i, shape[0], cond.device), cond, base, clip, on_x0)
            mean = q_posterior_mean(sched, z0, x, torch.full((shape[0],), i, dtype=torch.long, device=cond.device))
            x_prev = mean + var[i].sqrt().to(x.dtype) * randn_per_image(shape, generators, cond.device) if i > 0 else mean
            if repaint is not None:
                eps = randn_per_image(shape, generators, cond.device) if i > 0 else None
                x_prev = torch.where(hole, x_prev, noised_known(z_known, ab[i - 1] if i > 0 else 1.0, eps))
            if u < rounds - 1:  # RePaint: back to level i for another pass
                x = jump_back(x_prev, float(sched.betas[i]), randn_per_image(shape, generators, cond.device))
            else:
                x = x_prev
        if callback is not None:
            callback(n - 1 - i, x, z0 + base)
    return finalize(x + base, consistency)


def _x0_estimate(denoiser: Denoiser, x: Tensor, t: Tensor, cond: Tensor, base: Tensor, clip: bool,
                 on_x0: Consistency | None) -> Tensor:
    """The denoiser's x0 estimate at x_t in the diffused space (x0 - base), clamped to [-1, 1] in image
    space if `clip`, then the consistency callable applied (samplers.consistency.constrain_x0)."""
    z0 = denoiser(x, t, cond)
    if clip:
        z0 = (z0 + base).clamp(-1, 1) - base
    return constrain_x0(z0, base, on_x0)
