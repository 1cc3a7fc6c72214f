"""Sampling a distilled student (meddiff.distill): one network call from pure noise.

A student is trained so that its x0 estimate at the first time of the chain, from x_T ~ N(0, I)
and the condition, equals its teacher's deterministic ODE sample from the same x_T (Luhman &
Luhman 2021, "Knowledge distillation in iterative generative models"; SinSR, Wang et al. 2024).
Sampling it is one deterministic DDIM step (eta = 0) from x_T to the clean end, x0 = f_theta(x_T, T, y),
so data consistency, tiling and shared noise act on it as on any sampler (`meddiff.samplers.run.restore`
always gives it one step, as the posterior mean; a grid of more points is accepted here, but a
one-call student has learnt only the first). Unlike the posterior mean (the same single call of a network trained only on
the diffusion loss, which nearly ignores x_T), a student's output depends on x_T: it is a sample.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from ..diffusion.denoiser import Denoiser
from ..diffusion.grid import TimeGrid
from .consistency import Consistency
from .ddim import sample_ddim


def sample_student(denoiser: Denoiser, cond: Tensor, times: TimeGrid | None = None, *, steps: int | None = None,
                   generators: Sequence[torch.Generator], clip: bool = True,
                   callback: Callable[[int, Tensor, Tensor], None] | None = None,
                   consistency: Consistency | None = None) -> Tensor:
    """x0 [B, 1, *spatial] (image space, [-1, 1]) from a student given cond [B, C_cond, *spatial]:
    DDIM with eta 0 on `times` (None: the denoiser's uniform grid of `steps` points, default 1)."""
    grid = times if times is not None else denoiser.time_grid(steps or 1, "uniform")
    return sample_ddim(denoiser, cond, grid, eta=0.0, generators=generators, clip=clip, callback=callback,
                       consistency=consistency)
