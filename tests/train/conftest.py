"""Tiny in-memory Pair datasets and configs for fast training tests."""

from __future__ import annotations

from typing import NamedTuple

import pytest
import torch
from torch.utils.data import Dataset

from meddiff import config as config_mod


class Pair(NamedTuple):
    x0: torch.Tensor
    cond: torch.Tensor
    mask: torch.Tensor
    case_id: str


class TinyPairs(Dataset):
    """n smooth 8x8 images; the condition is a noisy copy drawn from torch's global RNG
    (as a degradation called with generator=None does), so data randomness goes through
    the RNGs the trainer seeds."""

    def __init__(self, n: int = 12, size: int = 8, seed: int = 123):
        g = torch.Generator().manual_seed(seed)
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
        a = torch.rand(n, 3, generator=g)
        self.x0 = torch.tanh(a[:, 0, None, None] * xx + a[:, 1, None, None] * yy + a[:, 2, None, None])[:, None]

    def __len__(self) -> int:
        return self.x0.shape[0]

    def __getitem__(self, i: int) -> Pair:
        x0 = self.x0[i]
        cond = (x0 + 0.1 * torch.randn(x0.shape)).clamp(-1, 1)
        return Pair(x0, cond, torch.ones_like(x0), f"case{i % 3}")


def tiny_config(out_dir, dropout=0.1, **train):
    values = {
        "task": {"kind": "denoise"},
        "model": {"channels": [8, 16], "attention_levels": [False, True], "norm_groups": 4, "num_res_blocks": 1, "num_heads": 2, "dropout": dropout},
        "diffusion": {"timesteps": 50},
        "sampler": {"steps": 10},
        "train": {"out_dir": str(out_dir), "steps": 6, "batch_size": 3, "lr": 1e-3, "ema_decay": 0.9,
                  "log_every": 1, "ckpt_every": 3, "keep_last": 2, "device": "cpu", "threads": 1,
                  "warmup_steps": 2, **train},
    }
    return config_mod.from_dict(values)


@pytest.fixture
def pairs():
    return TinyPairs()


def tiny_vdm_config(out_dir, gamma="learned_nnet", vdm=None, **train):
    """A tiny VDM (ScoreNet of width 16, 2 blocks) on TinyPairs' 8x8 images, paper optimiser settings."""
    values = {
        "objective": "vdm",
        "vdm": {"gamma": gamma, "gamma_features": 16, "embedding_dim": 16, "n_layers": 2, **(vdm or {})},
        "train": {"out_dir": str(out_dir), "steps": 6, "batch_size": 4, "lr": 3e-3, "betas": [0.9, 0.99],
                  "weight_decay": 1e-4, "ema_decay": 0.9, "log_every": 1, "ckpt_every": 3, "keep_last": 2,
                  "device": "cpu", "threads": 1, "warmup_steps": 2, "lr_schedule": "cosine", **train},
    }
    return config_mod.from_dict(values)


def train(cfg, train_set, **kw):
    """meddiff.train.loop.train with the model family cfg.objective names (as `meddiff train` passes it)."""
    from meddiff.objectives import objective_class
    from meddiff.train import loop

    return loop.train(cfg, train_set, family=objective_class(cfg), **kw)
