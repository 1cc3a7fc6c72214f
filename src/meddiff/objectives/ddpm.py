"""The conditional DDPM's training objective (Med-cDiff; Ho et al. 2020, Algorithm 1):

    repeat: (x0, y) ~ data; t ~ U{1..T}; eps ~ N(0, I);
            gradient step on || eps - eps_theta(sqrt(ab_t) x0 + sqrt(1 - ab_t) eps, y, t) ||^2

with AdamW, mixed precision (a grad scaler for fp16), gradient clipping and data-parallel ranks
(DDP). Timestep and noise of each example come from (train.seed, its global position)
(`meddiff.data.order.loss_noise`), so they do not depend on the batch or rank it lands in.
Implements `meddiff.objectives.protocol.Objective`; checkpoints have format "meddiff-ddpm-v1".
"""

from __future__ import annotations

import torch
from torch import nn

from ..checkpointing import DDPM
from ..config import Config
from ..data.order import VAL, loss_noise
from ..nn.unet import build_unet
from .protocol import Runtime, StepContext, TaskConditioned
from ..diffusion.denoiser import DDPMDenoiser, resolve_precision
from ..diffusion.loss import diffusion_loss
from ..diffusion.schedule import build_schedule


class DDPMObjective(TaskConditioned):
    format = DDPM.name
    sample_grid = True  # TensorBoard sample grids from ema_denoiser (train.tensorboard)

    @staticmethod
    def size_multiple(cfg: Config) -> tuple[int, str] | None:
        """(the multiple training sizes must have, what needs it): the U-Net's downsampling."""
        return 2 ** (len(cfg.model.channels) - 1), f"a U-Net with {len(cfg.model.channels)} levels"

    def __init__(self, cfg: Config, runtime: Runtime, data: object = None):
        self.cfg, self.runtime = cfg, runtime
        self.deg = self.degradation(cfg)
        self.in_channels = 1 + self.deg.cond_channels
        self.net = build_unet(cfg.model, self.in_channels, 1).to(runtime.device)
        self.precision = resolve_precision(cfg.train.precision, runtime.device, training=True)
        self.sched = build_schedule(cfg.diffusion)

    def optimisers(self, lr: float, betas: tuple[float, float], weight_decay: float, grad_clip: float):
        return torch.optim.AdamW(self.net.parameters(), lr=lr, betas=betas, weight_decay=weight_decay)

    def attach(self, ema: nn.Module) -> None:
        d = self.cfg.diffusion
        self.ddp = self.runtime.wrap(self.net)
        self.denoiser = DDPMDenoiser(self.ddp, self.sched, d.prediction, d.residual, self.precision)

    def step(self, ctx: StepContext, batch, opt, scaler) -> tuple[float, dict[str, float]]:
        dev = self.runtime.device
        x0 = batch.x0.to(dev)
        cond = self.deg.model_condition(batch.cond, batch.mask).to(dev)
        k, eps = loss_noise(ctx.seed, batch.position, self.sched.timesteps, x0.shape[1:])
        loss = diffusion_loss(self.denoiser, x0, cond, weighting=self.cfg.diffusion.loss_weight, k=k, eps=eps)
        return self.optimise(ctx, loss, opt, scaler), {}

    def optimise(self, ctx: StepContext, loss: torch.Tensor, opt, scaler) -> float:
        """One optimiser step on `loss` (clipped gradients, the grad scaler); returns the loss averaged over ranks."""
        value = float(self.runtime.mean_over_ranks(loss.detach()))
        ctx.check_finite("loss", value)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        norm = torch.nn.utils.clip_grad_norm_(self.net.parameters(), ctx.grad_clip)
        if not scaler.is_enabled() and not torch.isfinite(norm):
            raise ctx.failure("gradient norm", float(norm))
        scaler.step(opt)
        scaler.update()
        return value

    def val_batch(self, ema: nn.Module, batch, start: int, seed: int) -> dict[str, float]:
        dev, d = self.runtime.device, self.cfg.diffusion
        x0 = batch.x0.to(dev)
        cond = self.deg.model_condition(batch.cond, batch.mask).to(dev)
        ema_denoiser = DDPMDenoiser(ema, self.sched, d.prediction, d.residual, self.precision)
        k, eps = loss_noise(seed, batch.position, self.sched.timesteps, x0.shape[1:], stream=VAL)
        return {"total": float(diffusion_loss(ema_denoiser, x0, cond, weighting=d.loss_weight, k=k, eps=eps))}

    def ema_denoiser(self, ema: nn.Module) -> DDPMDenoiser:
        """The EMA network as a sampler's denoiser (train.tensorboard's sample grids)."""
        d = self.cfg.diffusion
        return DDPMDenoiser(ema, self.sched, d.prediction, d.residual, self.precision)

    def metadata(self) -> dict[str, str] | None:
        return None
