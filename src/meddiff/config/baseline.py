"""The learned baselines' section (`baseline`, objective baseline; meddiff.baselines) and its rules."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ..errors import ConfigError

if TYPE_CHECKING:
    from . import Config


@dataclass(frozen=True)
class BaselineConfig:
    """A learned baseline trained by meddiff's trainer (top-level ``objective: baseline``; see
    meddiff.baselines). Keys a baseline does not use are ignored by it; ``None`` means the value
    of that baseline's paper (stated in its module)."""

    name: Literal["pix2pix", "srgan", "upgan", "hpunet"] = "pix2pix"
    width: int = 64  # generator width of the first level (pix2pix ngf, SRGAN residual width)
    disc_width: int = 64  # discriminator width of the first layer (ndf)
    depth: int = 8  # pix2pix: U-Net down-samplings (paper: 8 for 256x256); others: levels of their U-Net
    disc_layers: int = 3  # pix2pix: PatchGAN stride-2 layers (3 = 70x70 receptive field)
    dropout: float = 0.5  # pix2pix: dropout of the innermost decoder layers (also at test time, as noise)
    n_blocks: int = 16  # SRGAN: residual blocks B
    gan_loss: Literal["bce", "lsgan"] = "bce"  # adversarial loss: the papers' cross-entropy, or least squares
    lambda_l1: float = 100.0  # pix2pix: weight of the L1 term
    adv_weight: float | None = None  # generator adversarial weight; None: the paper's (pix2pix 1, SRGAN 1e-3)
    perceptual_weight: float = 0.0  # SRGAN: weight of the shift-tolerant LPIPS term beside MSE (0 = MSE only)
    pretrain_steps: int = 0  # SRGAN: steps of MSE-only generator training (SRResNet) before the GAN
    channels: tuple[int, ...] | None = None  # UP-GAN/HPUNet U-Net widths per level; None: model.channels
    stages: int = 3  # UP-GAN: progressive stages
    l1_weight: float = 1.0  # UP-GAN: weight of the L1 term
    gg_weight: float = 1e-3  # UP-GAN: weight of the generalised-Gaussian NLL
    stage_steps: int = 0  # UP-GAN: steps per stage when trained progressively (0 = all stages jointly)
    latent_scales: int = 3  # HPUNet: decoder levels (coarsest first) that carry a latent
    latent_channels: int = 1  # HPUNet: channels of each latent
    kl_beta: float = 1.0  # HPUNet: weight of the KL terms
    recon: Literal["mse"] = "mse"  # HPUNet: reconstruction term (Gaussian NLL with fixed std recon_scale)
    recon_scale: float = 0.1  # HPUNet: that std, in [-1, 1] units
    uncertainty_samples: int = 8  # HPUNet: prior samples behind predict_with_uncertainty


def validate(cfg: Config) -> None:
    """Ranges of the baseline section always; what the trainer needs only when objective is baseline."""
    b = cfg.baseline
    for key, low in (("width", 1), ("disc_width", 1), ("depth", 1), ("disc_layers", 1), ("n_blocks", 0),
                     ("pretrain_steps", 0), ("stages", 1), ("stage_steps", 0), ("latent_scales", 1),
                     ("latent_channels", 1), ("uncertainty_samples", 1)):
        if getattr(b, key) < low:
            raise ConfigError(f"baseline.{key}: expected an integer >= {low}, got {getattr(b, key)}")
    for key in ("lambda_l1", "adv_weight", "perceptual_weight", "l1_weight", "gg_weight", "kl_beta"):
        v = getattr(b, key)
        if v is not None and not (math.isfinite(v) and v >= 0):
            raise ConfigError(f"baseline.{key}: expected a finite number >= 0, got {v}")
    if not (math.isfinite(b.recon_scale) and b.recon_scale > 0):
        raise ConfigError(f"baseline.recon_scale: expected a finite number > 0, got {b.recon_scale}")
    if b.channels is not None and (not b.channels or min(b.channels) < 1):
        raise ConfigError(f"baseline.channels: expected a non-empty list of positive widths, got {list(b.channels)}")
    if not 0.0 <= b.dropout < 1.0:
        raise ConfigError(f"baseline.dropout: expected a number in [0, 1), got {b.dropout}")
    if cfg.objective == "baseline" and cfg.train.precision not in ("auto", "fp32"):
        raise ConfigError(f"train.precision: baselines train in fp32 (auto or fp32), got {cfg.train.precision!r}")
