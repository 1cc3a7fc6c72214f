"""Time grids: the points a sampler evaluates the denoiser at (every sampler takes one, as
k-diffusion's samplers take their sigmas).

A grid is the list of times the network is evaluated at, from noisy to clean, k_{n-1} > ... > k_0
(DDPM: discrete timesteps; a continuous-time VDM: times t in (0, 1]), followed by a virtual clean end
(alpha = 1, sigma = 0), exactly as the ancestral sampler's last step returns the x0 estimate at k_0.
Along it we keep, in float64,

    alpha_bar_i,  alpha_i = sqrt(alpha_bar_i),  sigma_i = sqrt(1 - alpha_bar_i),
    lambda_i = log(alpha_i / sigma_i)  (HALF the log-SNR of schedule.log_snr; DPM-Solver's lambda)

`time_grid` builds one on a DiscreteSchedule; a VDM supplies the same arrays from its gamma(t)
(meddiff.vdm.sampling.continuous_grid); `chain_schedule` gives the ancestral sampler the
DiscreteSchedule of the chain through the grid's points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .schedule import DiscreteSchedule

GRIDS = ("uniform", "logsnr")


@dataclass(frozen=True)
class TimeGrid:
    """Times from noisy to clean. ``k`` [n] decreasing: what the denoiser is called with (int64
    timesteps of a DiscreteSchedule, or float64 continuous times); ``alpha_bar`` float64 [n] at
    those times; ``alpha``, ``sigma``, ``lam`` float64 [n + 1] whose last entry is the clean end
    (1, 0, +inf)."""

    k: Tensor
    alpha: Tensor
    sigma: Tensor
    lam: Tensor
    alpha_bar: Tensor

    def at(self, i: int, batch: int, device: torch.device | str) -> Tensor:
        """The i-th time for a batch: [batch] of k's dtype."""
        return torch.full((batch,), self.k[i].item(), dtype=self.k.dtype, device=device)

    def __len__(self) -> int:
        return int(self.k.shape[0])


def kept_timesteps(sched: DiscreteSchedule, steps: int, grid: str = "uniform") -> Tensor:
    """Ascending int64 timesteps to evaluate the network at (always holding T-1; and 0 if steps >= 2).

    "uniform": the respaced chain of the ancestral sampler (``sched.respaced(steps)``, even in t).
    "logsnr": even in lambda between lambda(T-1) and lambda(0), each point mapped to the nearest
    discrete timestep; duplicates are merged, so a fine grid may hold fewer than `steps` points.
    """
    if grid not in GRIDS:
        raise ValueError(f"grid {grid!r}: expected one of {list(GRIDS)}")
    kept, _ = sched.respaced(steps)  # also validates steps in 1..T
    if grid == "uniform" or steps == 1:
        return kept
    lam = 0.5 * sched.log_snr  # decreasing in k
    targets = torch.linspace(float(lam[-1]), float(lam[0]), steps, dtype=torch.float64)
    nearest = (lam[None, :] - targets[:, None]).abs().argmin(dim=1)
    return torch.unique(nearest)


def time_grid(sched: DiscreteSchedule, steps: int | None, grid: str = "uniform") -> TimeGrid:
    """The TimeGrid of `steps` network evaluations (None = every timestep) on `sched`."""
    kept = kept_timesteps(sched, sched.timesteps if steps is None else steps, grid).flip(0)
    return grid_from_alpha_bar(kept, sched.alpha_bar[kept])


def grid_from_alpha_bar(k: Tensor, ab: Tensor) -> TimeGrid:
    """The TimeGrid of times k (noisy to clean) whose alpha_bar is `ab` (float64 [n])."""
    alpha = torch.cat([ab.sqrt(), torch.ones(1, dtype=torch.float64)])
    sigma = torch.cat([(1 - ab).sqrt(), torch.zeros(1, dtype=torch.float64)])
    lam = torch.cat([0.5 * (torch.log(ab) - torch.log1p(-ab)), torch.tensor([math.inf], dtype=torch.float64)])
    return TimeGrid(k, alpha, sigma, lam, ab)


def chain_schedule(grid: TimeGrid) -> DiscreteSchedule:
    """The DiscreteSchedule of the Markov chain through the grid's points (clean to noisy), betas
    1 - alpha_bar_i / alpha_bar_{i-1} (the respaced chain of Nichol & Dhariwal 2021, Sec. 4: on a
    `time_grid` it equals ``sched.respaced(steps)[1]``)."""
    ab = grid.alpha_bar.flip(0)
    prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
    return DiscreteSchedule(1.0 - ab / prev)
