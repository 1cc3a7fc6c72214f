"""Configuration: frozen dataclasses, parsed once at the edge (YAML file + command-line overrides).

A config file has the sections ``data``, ``task``, ``model``, ``diffusion``, ``sampler``,
``train``, ``vdm``, ``baseline``, ``augment`` and ``distill``, and the top-level key ``objective`` (``ddpm``: the conditional DDPM of
Med-cDiff, the sections ``diffusion``/``sampler``; ``vdm``: the variational diffusion model of
Kingma et al. 2021 / Medical VDM, the section ``vdm``; ``baseline``: a learned baseline of the
section ``baseline``, e.g. pix2pix or SRGAN; ``distill``: a one-call student of a DDPM teacher, the
section ``distill``). Unknown keys and values of the wrong type are errors that name the key. Modules
never see a dict: they take the dataclass (or explicit arguments) they need. The resolved
config is saved beside every checkpoint (`to_dict` / `from_dict` round-trip exactly).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import yaml

from ..errors import ConfigError


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
class DiffusionConfig:
    """Discrete DDPM as Med-cDiff (Ho et al. 2020), with the options meddiff adds.

    The paper's setting is the default: T=2000, linear betas 1e-4..0.02, sigma_t^2 = beta_t,
    eps-prediction, diffusing the target image itself.
    """

    timesteps: int = 2000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    schedule: Literal["linear", "cosine"] = "linear"
    variance: Literal["beta", "beta_tilde"] = "beta"
    prediction: Literal["eps", "x0", "v"] = "eps"
    residual: bool = False  # diffuse x0 - cond (the detail the condition lacks) instead of x0
    loss_weight: Literal["simple", "min_snr"] = "simple"


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
    image_condition: bool = False  # unet only: condition on the task's degraded image (restoration)
    timesteps: int = 0  # 0 = continuous-time loss (eq. 17); T > 0 = finite-T loss (eq. 13)
    antithetic: bool = True  # antithetic (low-discrepancy) times across the batch (App. I.1)
    sample_steps: int = 256  # default ancestral steps of `meddiff sample` (any number at sampling time)


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


@dataclass(frozen=True)
class DistillConfig:
    """A few-step student of a teacher checkpoint (top-level ``objective: distill``; meddiff.distill):
    the student (the teacher's network, started from its weights) learns to map (x_T, condition) to
    the teacher's deterministic sample from the same x_T in one call (Luhman & Luhman 2021; SinSR)."""

    teacher: str = ""  # the teacher: a DDPM model file, checkpoint, run folder or shipped model name
    sampler: Literal["dpm_solver_pp", "ddim"] = "dpm_solver_pp"  # the teacher's ODE sampler (ddim with eta 0)
    steps: int = 10  # the teacher's network calls per target
    grid: Literal["auto", "uniform", "logsnr"] = "auto"  # the teacher's time grid (auto: as `meddiff sample`)
    items: int = 2048  # training targets precomputed once from the training pairs (the student's training set)
    val_items: int = 16  # validation targets from the val split (0: no validation loss)
    cache: str = ""  # the targets' file (default OUT/distill_targets.safetensors); resumed if it matches
    batch_size: int = 16  # teacher batch while precomputing


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    vdm: VDMConfig = field(default_factory=VDMConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    objective: Literal["ddpm", "vdm", "baseline", "distill"] = "ddpm"


# --------------------------------------------------------------------------- parsing


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp` and convert lists to tuples; raise ConfigError."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin in (typing.Union, types.UnionType):
        for a in args:
            if a is type(None) and value is None:
                return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: {value!r} matches none of {tp}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    raise ConfigError(f"{where}: unsupported type {tp}")  # pragma: no cover


def _build(cls: type, values: Any, where: str) -> Any:
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where}: expected a mapping of keys, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        head = f"{where}: unknown key(s)" if where else "unknown top-level section(s)"
        raise ConfigError(f"{head} {unknown}; expected some of {names}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in values.items()}
    return cls(**kwargs)


def from_dict(values: Mapping[str, Any] | None) -> Config:
    """Build a Config from nested dicts; unknown keys or wrong types raise ConfigError."""
    cfg = _build(Config, values or {}, "")
    _validate(cfg)
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain dict (tuples as lists) suitable for YAML/JSON."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        return v

    return plain(cfg)


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.steps=100' -> (['train', 'steps'], 100), 'objective=vdm' -> (['objective'], 'vdm'); values parsed as YAML."""
    if "=" not in text:
        hint = (" (a path? --resume and the other flags take no path here: the run folder is --out)"
                if "/" in text or Path(text).exists() else "")
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. train.steps=100{hint}")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if path in (["objective"],):  # top-level scalar keys
        try:
            return path, yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override {text!r}: value is not valid YAML ({e})") from None
    if len(path) != 2:
        raise ConfigError(f"override {text!r}: expected SECTION.KEY=VALUE, e.g. train.steps=100")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({e})") from None
    return path, value


def check_override(text: str, path: list[str], value: Any) -> None:
    """ConfigError naming the override (not the YAML file) if its key is unknown or its value has the wrong type."""
    hints = typing.get_type_hints(Config)
    section = path[0]
    if section not in hints:
        raise ConfigError(f"override {text!r}: unknown key {section!r}; expected one of {sorted(hints)}")
    tp = hints[section]
    if len(path) == 1 or not dataclasses.is_dataclass(tp):
        where, tp = section, (tp if len(path) == 1 else None)
    else:
        sub = typing.get_type_hints(tp)
        if path[1] not in sub:
            raise ConfigError(f"override {text!r}: unknown key {path[1]!r} in section {section!r}; "
                              f"expected one of {[f.name for f in dataclasses.fields(tp)]}")
        where, tp = f"{section}.{path[1]}", sub[path[1]]
    if tp is not None:
        try:
            _coerce(value, tp, where)
        except ConfigError as e:
            raise ConfigError(f"override {text!r}: {e}") from None


MAX_YAML_DEPTH = 64  # a config is 2 levels deep; deeper nesting is refused before Python's recursion limit


class _ConfigLoader(yaml.SafeLoader):
    """safe_load that refuses what a config never needs and an attacker or a typo would use: a key given twice
    in one mapping (the later would silently win over part of the earlier), nesting deeper than
    MAX_YAML_DEPTH, and aliases of lists or mappings (an alias bomb: 1 KB expanding to gigabytes)."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            node = self.anchors.get(event.anchor)
            if node is not None and not isinstance(node, yaml.ScalarNode):
                raise ConfigError(f"line {event.start_mark.line + 1}: alias *{event.anchor} repeats a list or mapping; "
                                  "expected a config without YAML aliases of lists or mappings (write the values out)")
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise ConfigError(f"line {mark.line + 1}: nested more than {MAX_YAML_DEPTH} levels deep; expected "
                                  "SECTION: {KEY: VALUE} (2 levels)")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:
                continue  # an unhashable key: SafeLoader names it
            line = key_node.start_mark.line + 1
            if first is not None:
                raise ConfigError(f"line {line}: key {key!r} is given twice (first on line {first}); expected each key "
                                  "once per section (merge the two)")
            seen[key] = line
        return super().construct_mapping(node, deep)


def load_yaml(text: str, where: str) -> Any:
    """Parse config YAML with :class:`_ConfigLoader`; errors are ConfigError naming `where`."""
    try:
        return yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 (a SafeLoader subclass)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{where} is not valid YAML: {' '.join(str(e).split())}") from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply; expected SECTION: {{KEY: VALUE}}") from None


def load(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config (or start from defaults) and apply SECTION.KEY=VALUE overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"config file {p} is not UTF-8 text (byte {e.start}: {e.reason}); expected a YAML file") from None
        loaded = load_yaml(text, f"config file {p}")
        if loaded is None:
            raise ConfigError(f"config file {p} holds no settings (empty, or only comments); expected a mapping of "
                              "sections (e.g. 'train: {steps: 1000}'), or no --config for the defaults")
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p}: expected a mapping of sections at the top level")
        values = loaded
    values = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in values.items()}
    for text in overrides:
        path_, value = parse_override(text)
        check_override(text, path_, value)
        if len(path_) == 1:
            values[path_[0]] = value
            continue
        section, key = path_
        sec = values.setdefault(section, {})
        if not isinstance(sec, dict):
            raise ConfigError(f"override {text!r}: section {section!r} is not a mapping in the config")
        sec[key] = value
    try:
        return from_dict(values)
    except ConfigError as e:
        src = f" in {path}" if path is not None else ""
        raise ConfigError(f"{e}{src}") from None


def save(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    from ..io.atomic import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(to_dict(cfg), sort_keys=False))


MAX_TIMESTEPS = 100_000


def _validate(cfg: Config) -> None:
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
    d = cfg.diffusion
    if not (0 < d.beta_start < d.beta_end < 1):
        raise ConfigError(f"diffusion: expected 0 < beta_start < beta_end < 1, got {d.beta_start}, {d.beta_end}")
    if not 1 <= d.timesteps <= MAX_TIMESTEPS:
        raise ConfigError(f"diffusion.timesteps: expected 1..{MAX_TIMESTEPS} (the paper uses 2000), got {d.timesteps}")
    if not (1 <= cfg.sampler.steps <= d.timesteps):
        raise ConfigError(f"sampler.steps: expected 1..{d.timesteps}, got {cfg.sampler.steps}")
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
    _validate_vdm(cfg)
    _validate_baseline(cfg)
    _validate_distill(cfg)
    _validate_volume(cfg)


def _validate_volume(cfg: Config) -> None:
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


def _validate_vdm(cfg: Config) -> None:
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
    if v.labels_csv and not v.label_from.startswith("column:"):
        raise ConfigError(f"vdm.labels_csv is set ({v.labels_csv!r}) but vdm.label_from is {v.label_from!r}, not column:NAME")
    if cfg.objective != "vdm":
        return
    if (v.n_classes > 0) != (v.label_from != "none"):
        raise ConfigError(f"vdm.n_classes is {v.n_classes} but vdm.label_from is {v.label_from!r}: a class-conditional "
                          "model (n_classes > 0) needs labels (folder, file or column:NAME), an unconditional one none")
    if v.n_classes == 1:
        raise ConfigError("vdm.n_classes: 1 class is an unconditional model; expected 0 or >= 2")
    if v.image_condition and v.n_classes > 0:
        raise ConfigError("vdm.image_condition and vdm.n_classes > 0: a VDM here is conditioned on an image or on a "
                          "class, not both")
    if v.image_condition and v.score != "unet":
        raise ConfigError("vdm.image_condition needs vdm.score unet (the condition image enters by channel concatenation)")
    if cfg.train.precision not in ("auto", "fp32"):
        raise ConfigError(f"train.precision: the VDM objective trains in fp32 (auto or fp32), got {cfg.train.precision!r}")


def _validate_distill(cfg: Config) -> None:
    """Ranges of the distill section always; a teacher only when objective is distill."""
    s = cfg.distill
    for key, low in (("steps", 1), ("items", 1), ("val_items", 0), ("batch_size", 1)):
        if getattr(s, key) < low:
            raise ConfigError(f"distill.{key}: expected an integer >= {low}, got {getattr(s, key)}")
    if cfg.objective != "distill":
        return
    if not s.teacher:
        raise ConfigError("distill.teacher: objective distill needs a teacher checkpoint (a model file, run folder or "
                          "shipped model name)")
    if cfg.sampler.name != "student":
        raise ConfigError(f"sampler.name: a distilled student samples with 'student' (its stored default), "
                          f"got {cfg.sampler.name!r}")


def _validate_baseline(cfg: Config) -> None:
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
