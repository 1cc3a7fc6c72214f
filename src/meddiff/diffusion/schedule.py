"""Discrete DDPM noise schedules (Ho et al. 2020), computed in float64.

Index convention: arrays are indexed by k = 0..T-1, where k corresponds to the paper's
t = k + 1 (so ``alpha_bar[0] = 1 - beta_1``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..config import DiffusionConfig


def linear_betas(timesteps: int, beta_start: float, beta_end: float) -> Tensor:
    """beta_t linear from beta_1 = beta_start to beta_T = beta_end (Ho et al. 2020, Sec. 4)."""
    return torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)


def cosine_betas(timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Cosine schedule (Nichol & Dhariwal 2021, eq. 17): alpha_bar(t) = cos^2(((t/T + s)/(1 + s)) pi/2)."""
    f = lambda u: math.cos((u + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    betas = [min(1 - f((k + 1) / timesteps) / f(k / timesteps), max_beta) for k in range(timesteps)]
    return torch.tensor(betas, dtype=torch.float64)


def alpha_bar(betas: Tensor) -> Tensor:
    """alpha_bar_t = prod_{i <= t} (1 - beta_i)  (Ho et al. 2020, notation above eq. 4)."""
    return torch.cumprod(1.0 - betas, dim=0)


def log_snr(alpha_bar_t: Tensor) -> Tensor:
    """lambda_t = log(alpha_bar_t / (1 - alpha_bar_t)), the time variable shared with VDM (= -gamma)."""
    return torch.log(alpha_bar_t) - torch.log1p(-alpha_bar_t)


@dataclass(frozen=True)
class DiscreteSchedule:
    """betas and the quantities derived from them, all float64 of shape [T]."""

    betas: Tensor

    @property
    def timesteps(self) -> int:
        return int(self.betas.shape[0])

    @property
    def alphas(self) -> Tensor:
        return 1.0 - self.betas

    @property
    def alpha_bar(self) -> Tensor:
        return alpha_bar(self.betas)

    @property
    def log_snr(self) -> Tensor:
        return log_snr(self.alpha_bar)

    def respaced(self, steps: int) -> tuple[Tensor, "DiscreteSchedule"]:
        """Evenly spaced subset of `steps` timesteps and the schedule of the shortened chain.

        The subset always holds the last step T-1 (the sampler starts there from N(0, I)) and,
        for steps >= 2, the first step 0.

        The new betas are 1 - alpha_bar_{k_i} / alpha_bar_{k_{i-1}} so that the marginals
        q(x_k | x_0) of the kept steps are unchanged (Nichol & Dhariwal 2021, Sec. 4).
        Returns (kept indices k as int64 [steps], new schedule with `steps` entries).
        """
        if not 1 <= steps <= self.timesteps:
            raise ValueError(f"steps must be in 1..{self.timesteps}, got {steps}")
        if steps == 1:  # the chain must start at the last step, where x_T ~ N(0, I) is the marginal
            kept = torch.tensor([self.timesteps - 1])
        else:
            kept = torch.linspace(0, self.timesteps - 1, steps, dtype=torch.float64).round().long()
            kept = torch.unique(kept)
        ab = self.alpha_bar[kept]
        prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
        return kept, DiscreteSchedule(1.0 - ab / prev)


def build_schedule(cfg: DiffusionConfig) -> DiscreteSchedule:
    if cfg.schedule == "linear":
        return DiscreteSchedule(linear_betas(cfg.timesteps, cfg.beta_start, cfg.beta_end))
    return DiscreteSchedule(cosine_betas(cfg.timesteps))
