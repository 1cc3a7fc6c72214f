"""A learned baseline (pix2pix, SRGAN, UP-GAN, HPUNet) under meddiff's training loop
(meddiff.objectives.protocol.Objective), trained with ``objective: baseline`` on the same data and
degradations as the diffusion models.

The step is the baseline's own ``train_step(x0, cond, mask, opts, step)`` (its optimisers, by name,
get the lr of every step from the loop and ``model.grad_clip``); the loop keeps an EMA of the whole
module; checkpoints have format "meddiff-baseline-v1"; fp32, one process; the validation loss is
the MSE of the EMA model's predictions.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..checkpointing import BASELINE
from ..config import Config
from ..data.degrade import build_degradation
from ..data.order import VAL, mix_seed
from ..errors import ConfigError
from .protocol import Runtime, StepContext, TaskConditioned
from ..baselines.registry import baseline_size_multiple, build_baseline


class BaselineObjective(TaskConditioned):
    format = BASELINE.name
    precision = "fp32"

    @staticmethod
    def size_multiple(cfg: Config) -> tuple[int, str] | None:
        """(the multiple training sizes must have, what needs it): the baseline's downsampling."""
        multiple = baseline_size_multiple(cfg, build_degradation(cfg.task).cond_channels)
        return multiple, f"baseline {cfg.baseline.name} (baseline.depth {cfg.baseline.depth})"

    def __init__(self, cfg: Config, runtime: Runtime, data: object = None):
        self.cfg, self.runtime = cfg, runtime
        self.deg = self.degradation(cfg)
        if runtime.distributed:
            raise ConfigError("objective baseline trains in one process (not under torchrun)")
        self.in_channels = self.deg.cond_channels  # a baseline sees the condition planes only
        self.net = build_baseline(cfg, self.in_channels).to(runtime.device)

    def optimisers(self, lr: float, betas: tuple[float, float], weight_decay: float, grad_clip: float):
        """Named optimisers ({"G": ..., "D": ...}), saved and restored by name; sets the module's grad_clip."""
        opts = self.net.optimisers(lr, betas, weight_decay)
        self.net.grad_clip = grad_clip if grad_clip > 0 else math.inf
        return opts

    def attach(self, ema: nn.Module) -> None:
        pass

    def step(self, ctx: StepContext, batch, opt, scaler) -> tuple[float, dict[str, float]]:
        """All of the baseline's updates (its train_step); returns its "loss"."""
        dev = self.runtime.device
        x0, mask = batch.x0.to(dev), batch.mask.to(dev)
        cond = self.deg.model_condition(batch.cond, batch.mask).to(dev)
        losses = self.net.train_step(x0, cond, mask, opt, ctx.step)
        value = float(losses["loss"])
        ctx.check_finite("loss", value)
        return value, {}

    def val_batch(self, ema: nn.Module, batch, start: int, seed: int) -> dict[str, float]:
        """MSE of the EMA model's prediction (noise from (seed, VAL, start))."""
        dev = self.runtime.device
        x0 = batch.x0.to(dev)
        cond = self.deg.model_condition(batch.cond, batch.mask).to(dev)
        g = torch.Generator().manual_seed(mix_seed(seed, VAL, start))
        pred = ema.predict(cond, batch.mask.to(dev), g)
        return {"total": float((pred - x0).square().mean())}

    def metadata(self) -> dict[str, str] | None:
        return None
