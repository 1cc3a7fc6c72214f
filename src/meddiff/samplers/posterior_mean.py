"""The posterior-mean estimate: one network call at the noisiest time of the chain.

At the first time of a sampling chain x_T is pure noise (alpha_T ~ 0 for the schedules meddiff
trains), so the denoiser's x0 estimate there is the network's regression of x0 on the condition
alone, x0_hat(x_T, T, y) ~ E[x0 | y]: the minimum-mean-squared-error restoration the model has
learnt. It is what every sampler returns after one step (DDIM with one step, DPM-Solver++ with
one step, the ancestral chain's first x0 prediction), named here because it is a choice of its own:

- it invents no texture (an average over the posterior has none of a sample's fine detail), so it
  does not paint training-set anatomy onto an image unlike the training data;
- it is the best estimate in PSNR; a posterior sample is sharper (better LPIPS, gradient ratio)
  but, where the posterior is wide, further from the truth (README, "Generalisation").

Several draws differ only through x_T, which the network nearly ignores at T: use a sampling
chain (dpm_solver_pp, ddim, ancestral) for `--samples N` uncertainty maps.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ..diffusion.denoiser import Denoiser
from ..diffusion.grid import TimeGrid
from .consistency import Consistency
from .dpm_solver import sample_dpm_solver_pp


def sample_posterior_mean(denoiser: Denoiser, cond: Tensor, times: TimeGrid | None = None, *, steps: int | None = None,
                          generators: Sequence[torch.Generator], clip: bool = True,
                          consistency: Consistency | None = None, **_: object) -> Tensor:
    """x0_hat(x_T, t_0, cond) [B, 1, *spatial] in image space, [-1, 1]: one network call at the
    noisiest time t_0 of `times` (None: the denoiser's one-step grid); steps and other sampler
    options are ignored (always one call)."""
    grid = denoiser.time_grid(1, "uniform") if times is None or len(times.k) != 1 else times
    return sample_dpm_solver_pp(denoiser, cond, grid, generators=generators, order=1, clip=clip, consistency=consistency)
