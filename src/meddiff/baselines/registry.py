"""Learned baselines by name: build one from a config, load one from a checkpoint, restore slices with it.

Every class takes ``(cfg.baseline, in_channels, cfg.model)``, where ``in_channels`` is the number
of condition planes ``deg.model_condition(cond, mask)`` has (1; 2 for inpainting: the image with
holes and the mask) - a baseline sees the condition only, never a noisy x_t. Classes are
imported lazily, so a baseline whose module is missing fails only when it is asked for, with an
error naming the module.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch

from ..checkpointing import BASELINE, frozen, load_weights, read_model_file
from ..config import Config
from ..errors import CheckpointError, ConfigError
from ..samplers.run import restore_batches
from .base import Baseline

# name -> "module:Class" (modules relative to meddiff.baselines)
BASELINES = {
    "pix2pix": "pix2pix:Pix2Pix",
    "srgan": "srgan:SRGAN",
    "upgan": "upgan:UPGAN",
    "hpunet": "hpunet:HPUNet",
}


def baseline_class(name: str) -> type[Baseline]:
    """The Baseline subclass registered as `name` (imported now)."""
    if name not in BASELINES:
        raise ConfigError(f"baseline.name: {name!r} is not one of {sorted(BASELINES)}")
    module, cls = BASELINES[name].split(":")
    full = f"meddiff.baselines.{module}"
    try:
        mod = importlib.import_module(full)
    except ModuleNotFoundError as e:
        if e.name == full:
            raise ConfigError(f"baseline {name!r} needs the module {full} ({cls}), which does not exist yet") from None
        raise
    try:
        return getattr(mod, cls)
    except AttributeError:
        raise ConfigError(f"baseline {name!r}: module {full} has no class {cls}") from None


def build_baseline(cfg: Config, in_channels: int) -> Baseline:
    """The baseline `cfg.baseline.name` with `in_channels` condition planes (module docstring)."""
    return baseline_class(cfg.baseline.name)(cfg.baseline, in_channels, cfg.model)


def baseline_size_multiple(cfg: Config, in_channels: int) -> int:
    """Training/sampling sizes must be multiples of this (built on the meta device: no weights allocated)."""
    with torch.device("meta"):
        return int(build_baseline(cfg, in_channels).size_multiple)


def load_baseline(path: str | Path, device: str | torch.device = "cpu") -> tuple[Config, Baseline]:
    """(config, baseline with the EMA weights, eval mode) from a "meddiff-baseline-v1" model file,
    checkpoint folder or run folder."""
    mf = read_model_file(path, BASELINE.name)
    file, tensors, meta, cfg = mf.file, mf.tensors, mf.meta, mf.cfg
    try:
        in_ch = int(meta["in_channels"])
    except (KeyError, ValueError):
        raise CheckpointError(f"{file}: metadata lacks an integer in_channels") from None
    model = build_baseline(cfg, in_ch)
    load_weights(model, {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}, file)
    model = frozen(model, device)
    return cfg, model


@torch.no_grad()
def restore_baseline(model: Baseline, planes: torch.Tensor, *, samples: int = 1, seed: int = 0, batch_size: int = 8,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """`samples` predictions of each of the N slices of `planes` [N, C, H, W] -> [S, N, 1, H, W] (CPU, float32),
    as `meddiff.samplers.run.restore` does for the DDPM: slices padded to model.size_multiple (image plane with -1,
    mask plane with 0) and cropped back; sample s of slice j uses the generator seeded image_seed(seed, j, s)."""
    def predict(c: torch.Tensor, gens: list[torch.Generator], i: int) -> torch.Tensor:
        mask = c[:, 1:2] if c.shape[1] > 1 else torch.ones_like(c[:, :1])
        # one generator per image: predict each image with its own (batch composition does not matter)
        return torch.cat([model.predict(c[k: k + 1], mask[k: k + 1], g) for k, g in enumerate(gens)])

    return restore_batches(predict, planes, model.size_multiple, samples=samples, seed=seed, batch_size=batch_size,
                           device=device)
