"""Loading a trained conditional DDPM (format "meddiff-ddpm-v1") for sampling."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..checkpointing import DDPM, frozen, load_weights, read_model_file
from ..config import Config
from ..data.degrade import build_degradation
from ..errors import CheckpointError
from ..nn.unet import UNet, build_unet
from .denoiser import DDPMDenoiser
from .schedule import build_schedule


def load_model(path: str | Path, *, expect_task: str | None = None, device: str | torch.device = "cpu",
               precision: str | None = None) -> tuple[Config, UNet, DDPMDenoiser]:
    """(config, U-Net with the EMA weights in eval mode, denoiser) from a checkpoint.

    path: a checkpoint folder, its model.safetensors, a standalone exported model file, or a
    run folder (uses checkpoints/latest). expect_task: "sr" | "denoise" | "inpaint" to refuse a
    model trained for another task. The denoiser's precision is `precision` ("fp32" | "bf16" | "fp16" |
    "auto"), default config.sampler.precision.
    """
    mf = read_model_file(path, DDPM.name)
    file, meta, cfg = mf.file, mf.meta, mf.cfg
    task = meta.get("task", cfg.task.kind)
    if expect_task is not None and task != expect_task:
        raise CheckpointError(f"{file} was trained for task {task!r}, but task {expect_task!r} was requested")
    try:
        in_ch, out_ch = int(meta["in_channels"]), int(meta["out_channels"])
    except (KeyError, ValueError):
        raise CheckpointError(f"{file}: metadata lacks integer in_channels/out_channels") from None
    expected_in = 1 + build_degradation(cfg.task).cond_channels
    if in_ch != expected_in:
        raise CheckpointError(f"{file}: in_channels {in_ch} but task {task!r} needs {expected_in}")
    net = build_unet(cfg.model, in_ch, out_ch)
    load_weights(net, mf.tensors, file)
    net = frozen(net, device)
    d = cfg.diffusion
    denoiser = DDPMDenoiser(net, build_schedule(d), d.prediction, d.residual, precision or cfg.sampler.precision)
    return cfg, net, denoiser


def load_pretrained(name_or_path: str | os.PathLike, *, device: str = "cpu", expect_task: str | None = None):
    """Deprecated: ``meddiff.load_pretrained(name)`` returns a Pipeline whose ``.restore`` does what
    `meddiff sample` does; its ``.cfg`` and ``.denoiser`` are what this returns.

    (config, denoiser) of a DDPM model by name or path (meddiff.checkpointing.named), ready for meddiff.samplers:
    ``denoiser(x_t [B, 1, H, W], k int64 [B], cond [B, C, H, W]) -> x0_hat``, images in
    [-1, 1] (meddiff.diffusion.denoiser); its network is ``denoiser.net``, in eval mode."""
    from ..checkpointing.named import locate

    cfg, _net, denoiser = load_model(locate(name_or_path), expect_task=expect_task, device=device)
    return cfg, denoiser
