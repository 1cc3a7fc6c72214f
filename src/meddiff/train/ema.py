"""Exponential moving average of the network weights (the weights sampling uses), kept during training:

    theta_ema <- beta_t * theta_ema + (1 - beta_t) * theta        after optimiser step t = 0, 1, ...

with beta_t = `meddiff.checkpointing.ema.ema_decay_at` (the rule, its warm-up and why, live there: sampling
reads it from a checkpoint's config too). The EMA copy lives beside the trained network, on the same device,
in float32, without gradients. Buffers (none in the U-Net) are copied, not averaged.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_copy(model: nn.Module) -> nn.Module:
    """A frozen deep copy of `model` to hold the average (eval mode, requires_grad False)."""
    ema = copy.deepcopy(model).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    return ema


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """In place: ema_p <- decay * ema_p + (1 - decay) * p for every parameter; buffers copied.

    decay in [0, 1]; 0 copies the weights, 1 freezes the average.
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
    e_params = list(ema.parameters())
    m_params = [p.detach() for p in model.parameters()]
    if len(e_params) != len(m_params):
        raise ValueError(f"EMA has {len(e_params)} parameters, model has {len(m_params)}")
    torch._foreach_mul_(e_params, decay)
    torch._foreach_add_(e_params, m_params, alpha=1.0 - decay)
    for eb, mb in zip(ema.buffers(), model.buffers()):
        eb.copy_(mb)
