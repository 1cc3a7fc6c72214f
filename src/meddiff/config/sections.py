"""The sections every model family reads: data, task, augment, model (the U-Net), sampler and train, with
the rules that check them (called by meddiff.config.from_dict, in the order of the checks before the split)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ..errors import ConfigError

if TYPE_CHECKING:
    from . import Config


@dataclass(frozen=True)
class DataConfig:
    """Where the prepared slices are (output of `meddiff prepare`) and how to read them."""

    prepared: str = "runs/prepared"  # folder written by `meddiff prepare`
    train_split: str = "train"
    val_split: str = "val"
    size: int = 128  # model input size (slices are prepared at this size)
    crop: int = 0  # random square training crops of this size (0 = whole slice)
    num_workers: int = 0
    mode: Literal["slices", "volume"] = "slices"  # volume: data.prepared from `meddiff prepare --mode volume` (3D / 2.5D)
    patch: tuple[int, ...] = ()  # volume mode, model.spatial_dims 3: training patch [D, H, W] (voxels)
    stack_axes: tuple[int, ...] = (0,)  # volume mode, 2.5D: volume axes whose planes are training slices (0 axial, 1 coronal, 2 sagittal)
    context_stride: tuple[int, int] = (1, 1)  # volume mode, 2.5D: neighbour slices this many voxels apart, drawn per stack (0: the slice repeated, as a single image gives)


@dataclass(frozen=True)
class TaskConfig:
    """The degradation that makes the condition: tasks are data, not code."""

    kind: Literal["sr", "denoise", "inpaint"] = "sr"
    sr_factor: float = 4.0  # one of 2*sqrt(2), 4, 4*sqrt(2), 8, 8*sqrt(2), 16 (the factor `meddiff sample` uses)
    sr_factors: tuple[float, ...] = ()  # training only: draw each image's factor from these (one blind model for all)
    sr_upsample: Literal["bicubic", "bilinear"] = "bicubic"
    noise_std: tuple[float, float] = (0.05, 0.2)  # Gaussian sigma range in [-1,1] units
    salt_pepper: tuple[float, float] = (0.0, 0.05)  # fraction of pixels hit
    low_dose_share: float = 0.0  # denoise: fraction of images given low-dose radiograph noise instead (meddiff.data.low_dose)
    dose_fraction: tuple[float, float] = (0.05, 0.5)  # denoise, low-dose: fraction of the full dose, log-uniform per image
    photons: float = 2.0e4  # denoise, low-dose: full-dose counts per pixel of an unattenuated ray
    electronic_std: float = 10.0  # denoise, low-dose: electronic noise, counts
    mask_kinds: tuple[str, ...] = ("box", "stroke")
    mask_coverage: tuple[float, float] = (0.1, 0.4)
    sr_axis: Literal["inplane", "through"] = "inplane"  # through: thick slices along the first spatial axis (meddiff.data.thick)
    context_slices: int = 0  # 2.5D: the condition also carries K neighbouring slices either side (data.mode volume)


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentations that cover real acquisitions (see `meddiff.data.augment`, `meddiff.data.synth`).

    The defaults change nothing (Med-cDiff's degradation only). Ranges are (low, high), drawn per image.
    """

    sr_kernels: tuple[str, ...] = ("bicubic",)  # bicubic (anti-aliased) and/or kspace (central k-space truncation)
    blur: tuple[float, float] = (0.0, 0.0)  # extra Gaussian PSF std before downsampling, in low-resolution pixels
    hr_noise: tuple[float, float] = (0.0, 0.0)  # noise std before downsampling (fraction of the intensity range)
    lr_noise: tuple[float, float] = (0.0, 0.0)  # noise std of the low-resolution measurement
    noise_kind: Literal["rician", "gaussian"] = "rician"
    kspace_noise: tuple[float, float] = (0.0, 0.0)  # noise std of the meddiff.data.acquisition kernels (k-space, Rician floor)
    gamma: tuple[float, float] = (1.0, 1.0)  # intensity gamma (target and condition alike)
    bias_field: float = 0.0  # max log-amplitude of a smooth multiplicative bias field (target and condition)
    synth_fraction: float = 0.0  # fraction of training images that are synthetic contrasts (meddiff.data.synth)
    synth_shapes: float = 0.5  # of those: fraction drawn from random smooth label maps instead of brain tissue maps


@dataclass(frozen=True)
class ModelConfig:
    """U-Net for eps/x0/v prediction (see `meddiff.nn.unet`)."""

    spatial_dims: int = 2
    channels: tuple[int, ...] = (64, 128, 256)
    num_res_blocks: int = 2
    attention_levels: tuple[bool, ...] = (False, False, True)
    norm_groups: int = 32
    num_heads: int = 4
    dropout: float = 0.0


@dataclass(frozen=True)
class SamplerConfig:
    name: str = "ancestral"
    steps: int = 50  # respaced chain length; timesteps (2000) = the paper's full chain
    eta: float = 1.0
    samples: int = 1  # samples per input (mean and per-pixel std written when > 1)
    seed: int = 0
    batch_size: int = 8
    precision: Literal["fp32", "bf16", "fp16", "auto"] = "fp32"
    # time grid of ddim / dpm_solver_pp: auto = log-SNR for dpm_solver_pp (it matched the 2000-step chain
    # from 5 steps in benchmarks/sampling.py, the uniform grid only at 10 and not at 20), uniform for ddim
    grid: Literal["auto", "uniform", "logsnr"] = "auto"


@dataclass(frozen=True)
class TrainConfig:
    out_dir: str = "runs/train"
    steps: int = 200_000
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    ema_decay: float = 0.999  # the EMA's long-run decay (its cap under the warm-up)
    ema_warmup: bool = True  # EMA decay min(ema_decay, (1 + t)/(10 + t)) at step t (meddiff.train.ema)
    grad_clip: float = 1.0
    precision: Literal["fp32", "bf16", "fp16", "auto"] = "auto"  # auto: bf16/fp16 autocast on CUDA, fp32 on CPU
    lr_schedule: Literal["constant", "cosine"] = "constant"  # after the warm-up
    lr_min: float = 0.0  # cosine: the lr reached at the end of the decay
    lr_decay_steps: int = 0  # cosine: step at which the decay ends (0 = train.steps, then fixed for a resume)
    seed: int = 0
    log_every: int = 50
    ckpt_every: int = 1000
    keep_last: int = 2
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # torch CPU threads (0 = torch default)
    tensorboard: bool = False  # also write the logged scalars to OUT/tensorboard (needs the tensorboard package)
    init_from: str = ""  # start from these weights (a model file or checkpoint; fresh optimiser), e.g. fine-tuning


def validate_model(cfg: Config) -> None:
    """The U-Net's section: dimensions, widths, groups, heads, blocks, dropout."""
    m = cfg.model
    if m.spatial_dims not in (2, 3):
        raise ConfigError(f"model.spatial_dims: expected 2 or 3, got {m.spatial_dims}")
    if len(m.attention_levels) != len(m.channels):
        raise ConfigError(
            f"model.attention_levels has {len(m.attention_levels)} entries but model.channels has {len(m.channels)}"
        )
    if not m.channels or any(c < 1 for c in m.channels):
        raise ConfigError(f"model.channels: expected a non-empty list of positive widths, got {list(m.channels)}")
    if m.norm_groups < 1:
        raise ConfigError(f"model.norm_groups: expected an integer >= 1, got {m.norm_groups}")
    for c in m.channels:
        if c % m.norm_groups:
            raise ConfigError(f"model.channels: {c} is not divisible by model.norm_groups={m.norm_groups}")
    if m.num_heads < 1:
        raise ConfigError(f"model.num_heads: expected an integer >= 1, got {m.num_heads}")
    for c, att in zip(m.channels, m.attention_levels):
        if att and c % m.num_heads:
            raise ConfigError(f"model.num_heads: {m.num_heads} heads do not divide the {c} channels of an attention level; "
                              "expected a divisor of every width with attention")
    if m.num_res_blocks < 1:
        raise ConfigError(f"model.num_res_blocks: expected an integer >= 1, got {m.num_res_blocks}")
    if not (0.0 <= m.dropout < 1.0):
        raise ConfigError(f"model.dropout: expected a number in [0, 1), got {m.dropout}")


def validate_train_and_data(cfg: Config) -> None:
    """The train and data sections (the messages of meddiff.train.loop.check_train_config)."""
    if cfg.train.batch_size < 1:
        raise ConfigError(f"train.batch_size: expected an integer >= 1, got {cfg.train.batch_size}")
    if cfg.train.steps < 0:
        raise ConfigError(f"train.steps: expected an integer >= 0, got {cfg.train.steps}")
    t = cfg.train
    finite = lambda v: v == v and abs(v) != float("inf")  # noqa: E731
    rules = [  # the messages of meddiff.train.loop.check_train_config (checked here, before any work)
        ("lr", finite(t.lr) and t.lr > 0, "> 0"), ("log_every", t.log_every >= 1, ">= 1"),
        ("ckpt_every", t.ckpt_every >= 1, ">= 1"), ("keep_last", t.keep_last >= 0, ">= 0 (0 keeps all)"),
        ("warmup_steps", t.warmup_steps >= 0, ">= 0"), ("ema_decay", 0.0 <= t.ema_decay <= 1.0, "in [0, 1]"),
        ("grad_clip", finite(t.grad_clip) and t.grad_clip >= 0, ">= 0 (0 = no clipping)"),
        ("weight_decay", finite(t.weight_decay) and t.weight_decay >= 0, ">= 0"),
        ("threads", t.threads >= 0, ">= 0 (0 = torch default)"),
        ("betas", all(0.0 <= b < 1.0 for b in t.betas), "two values in [0, 1)"),
    ]
    for key, ok, expected in rules:
        if not ok:
            raise ConfigError(f"train.{key}: expected {expected}, got {getattr(t, key)!r}")
    if cfg.data.size < 1 or cfg.data.crop < 0 or cfg.data.num_workers < 0:
        raise ConfigError(f"data.size >= 1, data.crop >= 0 and data.num_workers >= 0 expected, got "
                          f"{cfg.data.size}, {cfg.data.crop}, {cfg.data.num_workers}")
    if t.lr_min < 0 or t.lr_decay_steps < 0:
        raise ConfigError(f"train.lr_min and train.lr_decay_steps: expected >= 0, got {t.lr_min}, {t.lr_decay_steps}")


def validate_volume(cfg: Config) -> None:
    """3D and 2.5D training (meddiff.data.volume_dataset): what each needs from data and task."""
    d, t = cfg.data, cfg.task
    if t.context_slices < 0:
        raise ConfigError(f"task.context_slices: expected an integer >= 0, got {t.context_slices}")
    if t.sr_axis == "through" and (t.kind != "sr" or t.sr_factor != int(t.sr_factor) or t.sr_factors):
        raise ConfigError(f"task.sr_axis through: thick slices need task.kind sr and one integer task.sr_factor, "
                          f"got kind {t.kind!r}, sr_factor {t.sr_factor}, sr_factors {list(t.sr_factors)}")
    if t.context_slices and (cfg.model.spatial_dims != 2 or t.sr_axis != "inplane"):
        raise ConfigError("task.context_slices (2.5D) needs model.spatial_dims 2 and task.sr_axis inplane")
    if (t.context_slices or cfg.model.spatial_dims == 3) and d.mode != "volume":
        raise ConfigError("2.5D (task.context_slices) and 3D (model.spatial_dims 3) training read volumes: set data.mode volume")
    if cfg.model.spatial_dims == 3 and (len(d.patch) != 3 or min(d.patch) < 1):
        raise ConfigError(f"data.patch: 3D training needs a patch [D, H, W] of positive sizes, got {list(d.patch)}")
