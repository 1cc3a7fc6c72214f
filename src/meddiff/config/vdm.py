"""The VDM's section (`vdm`, objective vdm; meddiff.vdm) and its rules."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ..errors import ConfigError

if TYPE_CHECKING:
    from . import Config


@dataclass(frozen=True)
class VDMConfig:
    """Variational diffusion model (Kingma et al. 2021; Medical VDM, Rguibi et al. 2023): see meddiff.vdm.

    Used when the top-level ``objective`` is ``vdm``. The paper's optimiser (AdamW b1 0.9,
    b2 0.99, eps 1e-8, weight decay 1e-4, linear warm-up then cosine decay) is set in ``train``.
    """

    gamma: Literal["fixed_linear", "learned_linear", "learned_nnet"] = "learned_nnet"
    gamma_min: float = -13.3  # gamma(0) = -log SNR(0) (VDM reference)
    gamma_max: float = 5.0  # gamma(1)
    gamma_features: int = 1024  # learned_nnet: width of the monotone network's hidden layer (App. H)
    score: Literal["scorenet", "unet"] = "scorenet"  # unet: the U-Net of the `model` section
    embedding_dim: int = 128  # scorenet: time/condition embedding and residual width (paper: 128)
    n_layers: int = 10  # scorenet: residual blocks (paper: 10)
    encoder: Literal["levels", "resnet"] = "levels"  # levels: VDM reference; resnet: the paper's latent ResNet
    z_dim: int = 64  # resnet encoder: latent size (paper: 64)
    encoder_hidden: int = 256  # resnet encoder/decoder width
    encoder_layers: int = 6  # resnet encoder/decoder residual blocks
    vocab_size: int = 256  # intensity levels of the discretised data (8 bit)
    n_classes: int = 0  # 0 = unconditional; else class-conditional (labels from label_from)
    label_from: str = "none"  # none | folder | file | column:NAME (see meddiff.vdm.build.slice_labels)
    labels_csv: str = ""  # column:NAME: CSV with NAME and case_id or patient_id (default: manifest.csv)
    label_dropout: float = 0.0  # classifier-free guidance: share p of training examples whose score net sees "no class"
    class_lr_scale: float = 1.0  # the class path's learning rate (class embedding, conditioning projection) / train.lr
    image_condition: bool = False  # unet only: condition on the task's degraded image (restoration)
    timesteps: int = 0  # 0 = continuous-time loss (eq. 17); T > 0 = finite-T loss (eq. 13)
    antithetic: bool = True  # antithetic (low-discrepancy) times across the batch (App. I.1)
    sample_steps: int = 256  # default ancestral steps of `meddiff sample` (any number at sampling time)


def validate(cfg: Config) -> None:
    """Ranges of the vdm section always; its cross-key rules only when objective is vdm."""
    v = cfg.vdm
    if not (math.isfinite(v.gamma_min) and math.isfinite(v.gamma_max) and v.gamma_min < v.gamma_max):
        raise ConfigError(f"vdm.gamma_min/gamma_max: expected finite gamma_min < gamma_max, got {v.gamma_min}, {v.gamma_max}")
    for key, low in (("gamma_features", 1), ("embedding_dim", 2), ("n_layers", 0), ("z_dim", 1), ("encoder_hidden", 1),
                     ("encoder_layers", 0), ("vocab_size", 2), ("n_classes", 0), ("timesteps", 0), ("sample_steps", 1)):
        if getattr(v, key) < low:
            raise ConfigError(f"vdm.{key}: expected an integer >= {low}, got {getattr(v, key)}")
    if not (v.label_from in ("none", "folder", "file") or (v.label_from.startswith("column:") and len(v.label_from) > 7)):
        raise ConfigError(f"vdm.label_from: expected none, folder, file or column:NAME, got {v.label_from!r}")
    if not (math.isfinite(v.label_dropout) and 0.0 <= v.label_dropout < 1.0):
        raise ConfigError(f"vdm.label_dropout: expected a probability 0 <= p < 1, got {v.label_dropout}")
    if not (math.isfinite(v.class_lr_scale) and v.class_lr_scale > 0):
        raise ConfigError(f"vdm.class_lr_scale: expected a number > 0, got {v.class_lr_scale}")
    if v.labels_csv and not v.label_from.startswith("column:"):
        raise ConfigError(f"vdm.labels_csv is set ({v.labels_csv!r}) but vdm.label_from is {v.label_from!r}, not column:NAME")
    if cfg.objective != "vdm":
        return
    if (v.n_classes > 0) != (v.label_from != "none"):
        raise ConfigError(f"vdm.n_classes is {v.n_classes} but vdm.label_from is {v.label_from!r}: a class-conditional "
                          "model (n_classes > 0) needs labels (folder, file or column:NAME), an unconditional one none")
    if v.label_dropout > 0 and v.n_classes == 0:
        raise ConfigError(f"vdm.label_dropout is {v.label_dropout} but vdm.n_classes is 0: dropping the label "
                          "(classifier-free guidance) needs a class-conditional model (n_classes >= 2)")
    if v.class_lr_scale != 1.0 and v.n_classes == 0:
        raise ConfigError(f"vdm.class_lr_scale is {v.class_lr_scale} but vdm.n_classes is 0: an unconditional model "
                          "has no class path to scale")
    if v.n_classes == 1:
        raise ConfigError("vdm.n_classes: 1 class is an unconditional model; expected 0 or >= 2")
    if v.image_condition and v.n_classes > 0:
        raise ConfigError("vdm.image_condition and vdm.n_classes > 0: a VDM here is conditioned on an image or on a "
                          "class, not both")
    if v.image_condition and v.score != "unet":
        raise ConfigError("vdm.image_condition needs vdm.score unet (the condition image enters by channel concatenation)")
    if cfg.train.precision not in ("auto", "fp32"):
        raise ConfigError(f"train.precision: the VDM objective trains in fp32 (auto or fp32), got {cfg.train.precision!r}")
