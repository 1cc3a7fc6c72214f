"""Time grids for the deterministic / few-step samplers (DDIM, DPM-Solver++).

A grid is the decreasing list of discrete timesteps the network is evaluated at, k_{n-1} > ... > k_0,
followed by a virtual clean end (alpha = 1, sigma = 0), exactly as the ancestral sampler's last
step returns the x0 estimate at k_0. Along it we keep, in float64,

    alpha_i = sqrt(alpha_bar_{k_i}),  sigma_i = sqrt(1 - alpha_bar_{k_i}),
    lambda_i = log(alpha_i / sigma_i)  (HALF the log-SNR of schedule.log_snr; DPM-Solver's lambda)

so a continuous-time (VDM) model can later supply the same three arrays from its gamma(t).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..diffusion.schedule import DiscreteSchedule

GRIDS = ("uniform", "logsnr")


@dataclass(frozen=True)
class TimeGrid:
    """Timesteps from noisy to clean. ``k`` int64 [n] decreasing; ``alpha``, ``sigma``, ``lam``
    float64 [n + 1] whose last entry is the clean end (1, 0, +inf)."""

    k: Tensor
    alpha: Tensor
    sigma: Tensor
    lam: Tensor

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
    ab = sched.alpha_bar[kept]
    alpha = torch.cat([ab.sqrt(), torch.ones(1, dtype=torch.float64)])
    sigma = torch.cat([(1 - ab).sqrt(), torch.zeros(1, dtype=torch.float64)])
    lam = torch.cat([0.5 * (torch.log(ab) - torch.log1p(-ab)), torch.tensor([math.inf], dtype=torch.float64)])
    return TimeGrid(kept, alpha, sigma, lam)
