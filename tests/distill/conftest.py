"""Helpers of the distillation tests (here and tests/objectives/test_distill.py): tiny settings, an untrained
teacher denoiser and condition planes."""

import torch

from meddiff import config as config_mod
from meddiff.diffusion.denoiser import DDPMDenoiser
from meddiff.diffusion.schedule import build_schedule
from meddiff.nn.unet import build_unet

TINY = ["model.channels=[8,16]", "model.attention_levels=[false,true]", "model.norm_groups=4",
        "model.num_res_blocks=1", "model.num_heads=2", "diffusion.timesteps=50", "diffusion.prediction=x0",
        "diffusion.residual=true", "train.batch_size=2", "train.log_every=1", "train.device=cpu", "train.threads=1",
        "data.size=16"]


def tiny_denoiser() -> DDPMDenoiser:
    """An untrained x0-predicting residual U-Net (output conv randomised so it matters), fixed seed."""
    cfg = config_mod.load(None, [o for o in TINY if o.split(".")[0] in ("model", "diffusion")])
    torch.manual_seed(0)
    net = build_unet(cfg.model, 2, 1)
    with torch.no_grad():
        for p in net.conv_out.parameters():
            p.normal_(0, 0.3)
    return DDPMDenoiser(net.eval(), build_schedule(cfg.diffusion), "x0", True)


def planes(n=3, size=16, seed=1) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1
