"""The contract every learned baseline (pix2pix, SRGAN, UP-GAN, HPUNet) implements.

A baseline is one ``nn.Module`` that owns all of its networks (generator, discriminator,
prior/posterior nets ...) and knows its own training objective. meddiff's trainer
(`meddiff.train.loop`) owns everything else: data, degradation, seeds, learning-rate schedule,
EMA, gradient clipping, checkpoints, resume, logging. So a baseline adds a model and a loss,
never a second trainer.

Tensors (same convention as the diffusion models):

    x0    [B, 1, H, W]  the clean target in [-1, 1]
    cond  [B, C, H, W]  ``deg.model_condition(cond, mask)``: the degraded image (SR: interpolated
                        to the target grid; inpainting: 2 channels, image with holes and mask)
    mask  [B, 1, H, W]  1 where pixels must be generated (all ones for SR and denoising)

The trainer calls, once per optimiser step,

    losses = model.train_step(x0, cond, mask, opts, step)

``opts`` is ``model.optimisers(lr, betas, weight_decay)`` (built once; saved and restored by the
checkpoint code by name). ``train_step`` does its own ``zero_grad``/``backward``/``step`` for each
optimiser (a GAN alternates discriminator and generator updates) and returns named float losses
for the log; the key ``"loss"`` is the one the progress bar and NaN check watch. Gradient
clipping is applied by calling ``clip(params)`` (passed in by the trainer through
``model.grad_clip``) before each ``opt.step()``.

At sampling time the trainer's EMA copy of the whole module is used:

    out = model.predict(cond, mask, generator)        # [B, 1, H, W] in [-1, 1]

and probabilistic baselines may also implement ``predict_with_uncertainty`` (UP-GAN: per-pixel
std) or draw several samples through different generators (HPUNet).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn

Tensor = torch.Tensor


class Baseline(nn.Module):
    """Base class: subclasses set ``name`` and implement the three methods below."""

    name: ClassVar[str] = "baseline"
    grad_clip: float = math.inf  # set by the trainer from train.grad_clip (0 there = no clipping)
    size_multiple: int = 1  # H and W must be multiples of this (sampling pads to it; training crops are checked)

    def optimisers(self, lr: float, betas: tuple[float, float], weight_decay: float) -> dict[str, torch.optim.Optimizer]:
        """Named optimisers over disjoint parameter groups (e.g. {"G": ..., "D": ...})."""
        raise NotImplementedError

    def train_step(self, x0: Tensor, cond: Tensor, mask: Tensor, opts: dict[str, torch.optim.Optimizer],
                   step: int) -> dict[str, float]:
        """One training step (all of the baseline's updates); returns named losses incl. "loss"."""
        raise NotImplementedError

    @torch.no_grad()
    def predict(self, cond: Tensor, mask: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The restored image [B, 1, H, W] in [-1, 1]."""
        raise NotImplementedError

    def clip(self, params) -> None:
        """Clip the gradient norm of `params` to self.grad_clip (no-op when infinite)."""
        if math.isfinite(self.grad_clip):
            torch.nn.utils.clip_grad_norm_(list(params), self.grad_clip)

    def predict_with_uncertainty(self, cond: Tensor, mask: Tensor,
                                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(prediction, per-pixel std) for baselines that model uncertainty; others raise."""
        raise NotImplementedError(f"{self.name} does not estimate uncertainty")
