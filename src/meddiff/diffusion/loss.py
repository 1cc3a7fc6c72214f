"""Training objective of the conditional DDPM: the simple loss of Ho et al. (2020, eq. 14),

    L_simple = E_{t, x0, eps} || eps - eps_theta(sqrt(ab_t) x0 + sqrt(1 - ab_t) eps, y, t) ||^2,

written for any parameterisation (the regression target is eps, x0 or v) with optional
Min-SNR-5 weighting (Hang et al. 2023), which for eps-prediction reweights timesteps so the
total is closer to an x0 loss with a capped weight.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .ddpm import _at, q_sample, v_target
from .denoiser import DDPMDenoiser


def sample_timesteps(batch: int, timesteps: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """k ~ U{0, ..., T-1} (the paper's t ~ U{1..T}), int64 [B]."""
    return torch.randint(0, timesteps, (batch,), generator=generator, device="cpu").to(device)


def min_snr_weight(snr: Tensor, prediction: str, gamma: float = 5.0) -> Tensor:
    """Per-timestep loss weight giving Min-SNR-gamma in x0 units for each parameterisation."""
    clipped = torch.clamp(snr, max=gamma)
    if prediction == "eps":
        return clipped / snr
    if prediction == "x0":
        return clipped
    return clipped / (snr + 1)  # v


def diffusion_loss(
    denoiser: DDPMDenoiser,
    x0: Tensor,
    cond: Tensor,
    *,
    weighting: str = "simple",
    generator: torch.Generator | None = None,
    k: Tensor | None = None,
    eps: Tensor | None = None,
) -> Tensor:
    """Monte-Carlo estimate of the (weighted) simple loss for one batch; scalar tensor.

    x0: [B, C, *spatial] target image in [-1, 1]; cond: [B, C_cond, *spatial] condition planes.
    Noise and timesteps are drawn on the CPU from `generator` (reproducible on any device),
    unless given: k int64 [B] and eps [B, C, *spatial] (the trainer draws them per example so a
    sample's noise does not depend on the batch or rank it lands in).
    """
    sched = denoiser.sched
    z0 = denoiser.to_diffused(x0, cond)
    if k is None:
        k = sample_timesteps(z0.shape[0], sched.timesteps, generator, z0.device)
    if eps is None:
        eps = torch.randn(z0.shape, generator=generator, dtype=z0.dtype).to(z0.device)
    k, eps = k.to(z0.device), eps.to(z0.device, z0.dtype)
    x_t = q_sample(sched, z0, k, eps)
    out = denoiser.net_output(x_t, k, cond)
    target = {"eps": eps, "x0": z0, "v": v_target(sched, z0, k, eps)}[denoiser.prediction]
    per_sample = (out - target).pow(2).flatten(1).mean(1)
    if weighting == "min_snr":
        snr = torch.exp(sched.log_snr)
        per_sample = per_sample * _at(min_snr_weight(snr, denoiser.prediction), k, per_sample).view(-1)
    return per_sample.mean()
