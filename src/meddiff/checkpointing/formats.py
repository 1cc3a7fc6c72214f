"""Reading meddiff model files: the format registry, the stored config, weights into a module.

A model file is a safetensors file whose string metadata holds "format" (one of FORMATS), the
resolved config as YAML, in_channels, out_channels, task and step, plus keys of its family (the
VDM's vdm_*; see meddiff.vdm.checkpoint). Loading never unpickles anything.

Every loader (`meddiff.diffusion.checkpoint.load_model` for the DDPM, `meddiff.vdm.checkpoint.load_vdm`,
`meddiff.baselines.registry.load_baseline`) reads through `read_model_file(path, format)`, which
refuses another family's file naming what it is; `format_of(path)` tells them apart from the header.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from safetensors import safe_open
from torch import nn

from .. import config as config_mod
from ..config import Config
from ..errors import CheckpointError, ConfigError

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.yaml"
LATEST = "latest"


@dataclass(frozen=True)
class Format:
    """One checkpoint family: the metadata "format" value, the config's `objective`, and how errors name it;
    `also`: other objectives whose checkpoints are of this family (a distilled student is a DDPM)."""

    name: str
    objective: str
    what: str
    also: tuple[str, ...] = ()


DDPM = Format("meddiff-ddpm-v1", "ddpm", "a DDPM (Med-cDiff) checkpoint", also=("distill",))
VDM = Format("meddiff-vdm-v1", "vdm", "a VDM (variational diffusion) checkpoint")
BASELINE = Format("meddiff-baseline-v1", "baseline", "a learned baseline checkpoint")
REGISTRY: dict[str, Format] = {f.name: f for f in (DDPM, VDM, BASELINE)}
FORMAT, VDM_FORMAT, BASELINE_FORMAT = DDPM.name, VDM.name, BASELINE.name
FORMATS = tuple(REGISTRY)


def format_for(objective: str) -> str:
    """The format name of checkpoints trained with config `objective` ("ddpm" | "vdm" | "baseline" | "distill")."""
    for f in REGISTRY.values():
        if objective in (f.objective, *f.also):
            return f.name
    raise ConfigError(f"objective {objective!r}: expected one of {[f.objective for f in REGISTRY.values()]}")


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, string metadata) of a safetensors file; CheckpointError naming it if missing or corrupt."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: file is empty (0 bytes); expected a safetensors model file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for bad headers / truncation
        raise CheckpointError(f"{path} is corrupt or not a safetensors file ({e})") from None
    return tensors, meta


# Keys a checkpoint's stored config may hold that a later meddiff removed, with the only value
# they ever had effect with (none: nothing read them); dropped when they hold it, refused otherwise.
LEGACY_KEYS = {("baseline", "latent_levels"): 3, ("baseline", "latent_dim"): 8, ("baseline", "kl_weight"): 1.0}


# Keys a later meddiff added whose default changed what training does, with the value every
# checkpoint written before them was trained with (filled in when a stored config lacks them).
ADDED_KEYS = {("train", "ema_warmup"): False}  # issue 19: the EMA was a constant decay before


def drop_legacy_keys(values: object) -> object:
    """A stored config's dict with LEGACY_KEYS (at their only value) dropped and ADDED_KEYS filled in."""
    if not isinstance(values, dict):
        return values
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in values.items()}
    for (section, key), default in LEGACY_KEYS.items():
        sec = out.get(section)
        if isinstance(sec, dict) and key in sec and sec[key] == default:
            del sec[key]
    for (section, key), before in ADDED_KEYS.items():
        sec = out.get(section)
        if isinstance(sec, dict) and key not in sec:
            sec[key] = before
    return out


def config_from_yaml(text: str, where: Path) -> Config:
    """The Config of a stored YAML text (CheckpointError naming `where` if invalid)."""
    try:
        return config_mod.from_dict(drop_legacy_keys(yaml.safe_load(text)))
    except (yaml.YAMLError, ConfigError, AttributeError, TypeError) as e:
        raise CheckpointError(f"{where}: the stored config is invalid ({' '.join(str(e).split())})") from None


def check_format(file: Path, meta: dict[str, str], expected: str) -> None:
    """CheckpointError unless the model file's metadata format is `expected`; a DDPM/VDM mix-up
    is named as such (each loader refuses the other's checkpoints)."""
    got = meta.get("format")
    if got == expected:
        return
    if got in REGISTRY:
        raise CheckpointError(f"{file} is {REGISTRY[got].what} (format {got!r}) but {REGISTRY[expected].what} "
                              f"(format {expected!r}) is needed here")
    raise CheckpointError(f"{file} is not a meddiff checkpoint (metadata format {got!r}, expected {expected!r})")


def latest_checkpoint(root: str | Path) -> Path | None:
    """The folder root/latest names, or None if there is no `latest` file."""
    marker = Path(root) / LATEST
    if not marker.is_file():
        return None
    name = marker.read_text().strip()
    path = Path(root) / name
    if not name or not (path / MODEL_FILE).is_file():
        raise CheckpointError(f"{marker} names {name!r}, which is not a complete checkpoint folder in {root}")
    return path


@dataclass(frozen=True)
class ModelSource:
    """A checkpoint resolved once (locate_model): the path as given (model file, checkpoint folder, run
    folder), its model file, and the model file's header metadata (format, stored config, card, ...).
    It stands for the path wherever one is taken (os.PathLike, str); the readers below do not resolve it again."""

    path: Path
    file: Path
    meta: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def format(self) -> str | None:
        return self.meta.get("format")

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)


def locate_model(path: "str | Path | ModelSource") -> ModelSource:
    """The ModelSource of a checkpoint path (resolve_model_file; the header metadata read once, {} if the
    file cannot be read: the loader then says why)."""
    if isinstance(path, ModelSource):
        return path
    file = resolve_model_file(path)
    try:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
    except Exception:  # unreadable: the loaders report it as they always have
        meta = {}
    return ModelSource(Path(path), file, meta)


def resolve_model_file(path: "str | Path | ModelSource") -> Path:
    """A model file from: a model.safetensors file, a checkpoint folder, or a run folder / its
    checkpoints folder / its `latest` file (then the checkpoint `latest` names); a ModelSource's own file."""
    if isinstance(path, ModelSource):
        return path.file
    p = Path(path)
    if p.name == LATEST and p.is_file():  # the pointer file itself, e.g. runs/x/checkpoints/latest
        latest = latest_checkpoint(p.parent)
        assert latest is not None
        return latest / MODEL_FILE
    if p.is_dir():
        if (p / MODEL_FILE).is_file():
            return p / MODEL_FILE
        for root in (p, p / "checkpoints"):
            latest = latest_checkpoint(root)
            if latest is not None:
                return latest / MODEL_FILE
        raise CheckpointError(f"{p} is a folder without {MODEL_FILE} or a checkpoints/latest file")
    if not p.exists():
        hint = "" if p.suffix or len(p.parts) > 1 else (" (a shipped or local model's name? meddiff.load_pretrained(name) "
                                                        "takes names, or resolve it with meddiff.checkpointing.named.resolve_checkpoint)")
        raise CheckpointError(f"checkpoint {p} does not exist{hint}")
    return p


def format_of(path: "str | Path | ModelSource") -> str | None:
    """The metadata format of a checkpoint's model file (reads only the safetensors header), or None
    if it cannot be read (the loader then reports why)."""
    if isinstance(path, ModelSource):
        return path.format
    try:
        with safe_open(str(resolve_model_file(path)), framework="pt", device="cpu") as f:
            return (f.metadata() or {}).get("format")
    except Exception:  # unreadable: the DDPM loader reports it as it always has
        return None


@dataclass(frozen=True)
class ModelFile:
    """A read model file: its path, tensors (as stored), metadata and the stored config."""

    file: Path
    tensors: dict[str, torch.Tensor]
    meta: dict[str, str]
    cfg: Config


def read_model_file(path: str | Path, expected: str) -> ModelFile:
    """Read the model file of `path` (see resolve_model_file), refuse another format than `expected`,
    parse the stored config."""
    file = resolve_model_file(path)
    tensors, meta = read_safetensors(file)
    check_format(file, meta, expected)
    if not meta.get("config", "").strip():
        raise CheckpointError(f"{file}: its metadata hold no 'config' (the model's configuration, which meddiff train "
                              "stores in every model file); expected a model file written by meddiff")
    return ModelFile(file, tensors, meta, config_from_yaml(meta.get("config", ""), file))


def read_config(ckpt_dir: str | Path) -> Config:
    """The resolved config saved in a checkpoint folder (config.yaml)."""
    p = Path(ckpt_dir) / CONFIG_FILE
    if not p.is_file():
        raise CheckpointError(f"checkpoint config {p} does not exist")
    return config_from_yaml(p.read_text(), p)


def check_finite(tensors: dict[str, torch.Tensor], where: Path, prefix: str = "") -> None:
    """CheckpointError naming `where` and the first floating tensor holding NaN or infinity: such weights make every
    output NaN, which would otherwise be reported against the input image (checked once, when loaded)."""
    for k, v in tensors.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            bad = int((~torch.isfinite(v)).sum())
            raise CheckpointError(f"{where}: tensor {prefix}{k} holds {bad} NaN or infinite value(s) of {v.numel()}; the "
                                  "checkpoint is corrupt (e.g. saved after training diverged); expected finite weights")


def load_weights(module: nn.Module, tensors: dict[str, torch.Tensor], where: Path, prefix: str = "") -> None:
    """Copy tensors into module, checking names and shapes (errors name the tensor and both shapes)."""
    own = module.state_dict()
    got = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    missing = sorted(set(own) - set(got))
    unexpected = sorted(set(got) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"{where}: weights do not match the configured model (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    check_finite(got, where, prefix)
    for k, v in own.items():
        if tuple(got[k].shape) != tuple(v.shape):
            raise CheckpointError(
                f"{where}: tensor {prefix}{k} has shape {tuple(got[k].shape)} in the checkpoint "
                f"but the configured model expects {tuple(v.shape)}"
            )
    with torch.no_grad():
        for k, v in own.items():
            v.copy_(got[k])


def frozen(module: nn.Module, device: str | torch.device) -> nn.Module:
    """`module` on `device`, in eval mode, without gradients (what every loader returns)."""
    module = module.to(device).eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def update_metadata(model_file: str | Path, **items: str) -> None:
    """Set metadata entries of a safetensors model file, rewriting it atomically (tensors unchanged):
    a model card (meddiff.domain.write_card), a config's sampler defaults."""
    from safetensors.torch import save_file

    from ..io.atomic import atomic_path

    tensors, meta = read_safetensors(Path(model_file))
    with atomic_path(model_file) as tmp:
        save_file(tensors, str(tmp), metadata={**meta, **items})

