"""The DDPM's section (the conditional DDPM of Med-cDiff: `diffusion`) and its rules, the sampler's
chain length among them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ..errors import ConfigError

if TYPE_CHECKING:
    from . import Config


@dataclass(frozen=True)
class DiffusionConfig:
    """Discrete DDPM as Med-cDiff (Ho et al. 2020), with the options meddiff adds.

    The paper's setting is the default: T=2000, linear betas 1e-4..0.02, sigma_t^2 = beta_t,
    eps-prediction, diffusing the target image itself.
    """

    timesteps: int = 2000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    schedule: Literal["linear", "cosine"] = "linear"
    variance: Literal["beta", "beta_tilde"] = "beta"
    prediction: Literal["eps", "x0", "v"] = "eps"
    residual: bool = False  # diffuse x0 - cond (the detail the condition lacks) instead of x0
    loss_weight: Literal["simple", "min_snr"] = "simple"


MAX_TIMESTEPS = 100_000


def validate(cfg: Config) -> None:
    """The diffusion section (betas, timesteps) and sampler.steps within its chain; checked for every objective."""
    d = cfg.diffusion
    if not (0 < d.beta_start < d.beta_end < 1):
        raise ConfigError(f"diffusion: expected 0 < beta_start < beta_end < 1, got {d.beta_start}, {d.beta_end}")
    if not 1 <= d.timesteps <= MAX_TIMESTEPS:
        raise ConfigError(f"diffusion.timesteps: expected 1..{MAX_TIMESTEPS} (the paper uses 2000), got {d.timesteps}")
    if not (1 <= cfg.sampler.steps <= d.timesteps):
        raise ConfigError(f"sampler.steps: expected 1..{d.timesteps}, got {cfg.sampler.steps}")
