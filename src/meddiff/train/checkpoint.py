"""Checkpoints: safetensors + JSON + YAML only (loading never unpickles anything).

Layout (OUT_DIR = train.out_dir)::

    OUT_DIR/checkpoints/
      step_0000100/
        model.safetensors        EMA weights (what sampling uses); metadata: format
                                 "meddiff-ddpm-v1" (or "meddiff-vdm-v1" for a VDM, with the
                                 keys of meddiff.vdm.checkpoint; "meddiff-baseline-v1" for
                                 a learned baseline: the whole module, generator and
                                 discriminator), config (resolved, YAML),
                                 in_channels, out_channels, task, step
        train_state.safetensors  raw weights "model.<name>", optimiser state "optim.<i>.<key>"
                                 (baselines: every optimiser by name, "optim.<opt>.<i>.<key>"),
                                 torch CPU RNG "rng.torch_cpu" (uint8)
        train_state.json         step, elapsed_s, optimiser param_groups, scalar optimiser state,
                                 grad-scaler state
        config.yaml              the resolved config
      latest                     text file naming the newest complete folder ("step_0000100")

A checkpoint folder is written under a temporary name and renamed into place, then `latest`
is replaced atomically, then folders beyond train.keep_last are pruned: an interruption or a
full disk at any moment leaves the previous checkpoint complete and `latest` pointing at it.
A standalone model file (`export_model`) is a copy of model.safetensors: it alone is enough
to sample (`load_model`).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import yaml
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .. import config as config_mod
from ..config import Config
from ..diffusion.denoiser import DDPMDenoiser
from ..diffusion.schedule import build_schedule
from ..errors import CheckpointError, ConfigError
from ..io.atomic import atomic_path, atomic_write_text
from ..nn.unet import UNet, build_unet

FORMAT = "meddiff-ddpm-v1"
VDM_FORMAT = "meddiff-vdm-v1"  # a variational diffusion model (meddiff.vdm.checkpoint loads it)
BASELINE_FORMAT = "meddiff-baseline-v1"  # a learned baseline (meddiff.baselines.load_baseline loads it)
FORMATS = (FORMAT, VDM_FORMAT, BASELINE_FORMAT)
MODEL_FILE = "model.safetensors"
STATE_FILE = "train_state.safetensors"
STATE_JSON = "train_state.json"
CONFIG_FILE = "config.yaml"
LATEST = "latest"


def checkpoint_name(step: int) -> str:
    return f"step_{step:07d}"


def _tensors(module: nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    return {prefix + k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}


def model_metadata(cfg: Config, in_channels: int, out_channels: int, step: int, fmt: str = FORMAT,
                   extra: dict[str, str] | None = None) -> dict[str, str]:
    """The string metadata stored in model.safetensors (safetensors metadata is str -> str);
    `extra` adds keys (the VDM's vocab_size, data_shape, class names, ...)."""
    return {
        **(extra or {}),
        "format": fmt,
        "config": yaml.safe_dump(config_mod.to_dict(cfg), sort_keys=False),
        "in_channels": str(in_channels),
        "out_channels": str(out_channels),
        "task": cfg.task.kind,
        "step": str(step),
    }


def _optimizer_state(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Flatten optimizer.state_dict() into named tensors + a JSON-able remainder."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for key, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{idx}.{key}"] = v.detach().to("cpu").contiguous().clone()
            else:
                scalars.setdefault(str(idx), {})[key] = v
    return tensors, {"param_groups": sd["param_groups"], "scalar_state": scalars}


def _named_optimizer_state(opts: Mapping[str, torch.optim.Optimizer]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Several optimisers by name (a baseline's {"G": ..., "D": ...}): tensors "optim.<name>.<i>.<key>",
    JSON {"named": {name: <as _optimizer_state>}}."""
    tensors: dict[str, torch.Tensor] = {}
    infos: dict[str, Any] = {}
    for name, opt in opts.items():
        if not name or "." in name:
            raise CheckpointError(f"optimiser name {name!r}: expected a non-empty name without '.'")
        t, infos[name] = _optimizer_state(opt)
        tensors.update({f"optim.{name}." + k[len("optim."):]: v for k, v in t.items()})
    return tensors, {"named": infos}


def _restore_named_optimizers(opts: Mapping[str, torch.optim.Optimizer], tensors: dict[str, torch.Tensor],
                              info: dict[str, Any], where: Path) -> None:
    saved = info.get("named")
    if not isinstance(saved, dict) or set(saved) != set(opts):
        raise CheckpointError(f"{where}: the checkpoint holds optimisers {sorted(saved or {})}, "
                              f"the model has {sorted(opts)}")
    for name, opt in opts.items():
        pre = f"optim.{name}."
        _restore_optimizer(opt, {"optim." + k[len(pre):]: v for k, v in tensors.items() if k.startswith(pre)}, saved[name])


def _restore_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, t in tensors.items():
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = t
    for idx, st in info.get("scalar_state", {}).items():
        state.setdefault(int(idx), {}).update(st)
    groups = []
    for g in info["param_groups"]:
        g = dict(g)
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    opt.load_state_dict({"state": state, "param_groups": groups})


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _write_folder(tmp: Path, cfg: Config, step: int, elapsed_s: float, model: nn.Module, ema: nn.Module,
                  optimizer: torch.optim.Optimizer, scaler: Any, in_channels: int, out_channels: int,
                  fmt: str = FORMAT, extra: dict[str, str] | None = None) -> None:
    tmp.mkdir(parents=True)
    save_file(_tensors(ema), str(tmp / MODEL_FILE), metadata=model_metadata(cfg, in_channels, out_channels, step, fmt, extra))
    opt_tensors, opt_info = (_named_optimizer_state(optimizer) if isinstance(optimizer, Mapping)
                             else _optimizer_state(optimizer))
    state = {**_tensors(model, "model."), **opt_tensors, "rng.torch_cpu": torch.get_rng_state()}
    save_file(state, str(tmp / STATE_FILE), metadata={"format": fmt + "-train-state"})
    info = {
        "format": fmt + "-train-state",
        "step": step,
        "elapsed_s": elapsed_s,
        "optimizer": opt_info,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
    }
    (tmp / STATE_JSON).write_text(json.dumps(info, indent=1))
    (tmp / CONFIG_FILE).write_text(yaml.safe_dump(config_mod.to_dict(cfg), sort_keys=False))
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    _fsync_dir(tmp)


def save_checkpoint(root: str | Path, step: int, cfg: Config, model: nn.Module, ema: nn.Module,
                    optimizer: torch.optim.Optimizer, scaler: Any = None, *, elapsed_s: float = 0.0,
                    in_channels: int, out_channels: int = 1, keep_last: int = 0, fmt: str = FORMAT,
                    extra_metadata: dict[str, str] | None = None) -> Path:
    """Write root/step_XXXXXXX atomically, point root/latest at it, prune beyond keep_last (0 = keep all).

    fmt: FORMAT (DDPM), VDM_FORMAT or BASELINE_FORMAT (then `optimizer` may be a dict of
    named optimisers); extra_metadata: more str -> str keys for model.safetensors.

    Raises CheckpointError naming the folder if anything cannot be written (the previous
    checkpoint and `latest` are then untouched).
    """
    root = Path(root)
    final = root / checkpoint_name(step)
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        for stale in list(root.glob(".tmp-step_*")) + list(root.glob(".old-step_*")):  # left by a crash
            shutil.rmtree(stale, ignore_errors=True)
        _write_folder(tmp, cfg, step, elapsed_s, model, ema, optimizer, scaler, in_channels, out_channels, fmt, extra_metadata)
        if final.exists():  # re-saving a step (after resuming from an earlier one): swap it out
            old = root / f".old-{final.name}-{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(root)
        atomic_write_text(root / LATEST, final.name + "\n")
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"could not write checkpoint {final}: {e.strerror or e}") from e
    prune(root, keep_last)
    return final


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoint folders under root, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_") and (p / MODEL_FILE).is_file())


def prune(root: str | Path, keep_last: int) -> None:
    """Delete all but the newest keep_last checkpoints (never the one `latest` names)."""
    if keep_last <= 0:
        return
    current = latest_checkpoint(root)
    for p in list_checkpoints(root)[:-keep_last]:
        if current is None or p.resolve() != current.resolve():
            shutil.rmtree(p, ignore_errors=True)


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


# --------------------------------------------------------------------------- reading


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} does not exist")
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


def _drop_legacy_keys(values: object) -> object:
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


def _config_from_yaml(text: str, where: Path) -> Config:
    try:
        return config_mod.from_dict(_drop_legacy_keys(yaml.safe_load(text)))
    except (yaml.YAMLError, ConfigError, AttributeError, TypeError) as e:
        raise CheckpointError(f"{where}: the stored config is invalid ({e})") from None


def check_format(file: Path, meta: dict[str, str], expected: str) -> None:
    """CheckpointError unless the model file's metadata format is `expected`; a DDPM/VDM mix-up
    is named as such (each loader refuses the other's checkpoints)."""
    got = meta.get("format")
    if got == expected:
        return
    kinds = {FORMAT: "a DDPM (Med-cDiff) checkpoint", VDM_FORMAT: "a VDM (variational diffusion) checkpoint",
             BASELINE_FORMAT: "a learned baseline checkpoint"}
    if got in kinds:
        raise CheckpointError(f"{file} is {kinds[got]} (format {got!r}) but {kinds[expected]} (format {expected!r}) "
                              "is needed here")
    raise CheckpointError(f"{file} is not a meddiff checkpoint (metadata format {got!r}, expected {expected!r})")


def read_config(ckpt_dir: str | Path) -> Config:
    """The resolved config saved in a checkpoint folder (config.yaml)."""
    p = Path(ckpt_dir) / CONFIG_FILE
    if not p.is_file():
        raise CheckpointError(f"checkpoint config {p} does not exist")
    return _config_from_yaml(p.read_text(), p)


def _load_weights(module: nn.Module, tensors: dict[str, torch.Tensor], where: Path, prefix: str = "") -> None:
    """Copy tensors into module, checking names and shapes (errors name the tensor and both shapes)."""
    own = module.state_dict()
    got = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    missing = sorted(set(own) - set(got))
    unexpected = sorted(set(got) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"{where}: weights do not match the configured model (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    for k, v in own.items():
        if tuple(got[k].shape) != tuple(v.shape):
            raise CheckpointError(
                f"{where}: tensor {prefix}{k} has shape {tuple(got[k].shape)} in the checkpoint "
                f"but the configured model expects {tuple(v.shape)}"
            )
    with torch.no_grad():
        for k, v in own.items():
            v.copy_(got[k])


def resolve_model_file(path: str | Path) -> Path:
    """A model file from: a model.safetensors file, a checkpoint folder, or a run folder / its
    checkpoints folder / its `latest` file (then the checkpoint `latest` names)."""
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
        raise CheckpointError(f"checkpoint {p} does not exist")
    return p


def init_weights(module: nn.Module, path: str | Path, fmt: str = FORMAT) -> Path:
    """Load the (EMA) weights of a model file / checkpoint / run folder into `module`, in place, for
    `train.init_from` (fine-tuning: the optimiser starts fresh). Names and shapes must match the
    configured model; errors name the file and the first mismatching tensor. Returns the file read."""
    file = resolve_model_file(path)
    tensors, meta = _read_safetensors(file)
    check_format(file, meta, fmt)
    ref = next(iter(module.parameters()))
    _load_weights(module, {k: v.to(ref.dtype) for k, v in tensors.items()}, file)
    return file


def load_model(path: str | Path, *, expect_task: str | None = None,
               device: str | torch.device = "cpu") -> tuple[Config, UNet, DDPMDenoiser]:
    """(config, U-Net with the EMA weights in eval mode, denoiser) from a checkpoint.

    path: a checkpoint folder, its model.safetensors, a standalone exported model file, or a
    run folder (uses checkpoints/latest). expect_task: "sr" | "denoise" | "inpaint" to refuse a
    model trained for another task. The denoiser's precision is config.sampler.precision.
    """
    from ..data.degrade import build_degradation  # the task decides the condition channels

    file = resolve_model_file(path)
    tensors, meta = _read_safetensors(file)
    check_format(file, meta, FORMAT)
    cfg = _config_from_yaml(meta.get("config", ""), file)
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
    _load_weights(net, tensors, file)
    net = net.to(device).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    d = cfg.diffusion
    denoiser = DDPMDenoiser(net, build_schedule(d), d.prediction, d.residual, cfg.sampler.precision)
    return cfg, net, denoiser


def export_model(ckpt: str | Path, dest_file: str | Path, *, half: bool = False) -> Path:
    """Copy a checkpoint's model.safetensors (EMA weights + config) to dest_file atomically.

    half=True stores floating-point weights as float16 (half the size, for shipping a model
    in a repository); `load_model` casts them back to float32. Metadata gains
    "stored_dtype": "float16".
    """
    src = resolve_model_file(ckpt)
    tensors, meta = _read_safetensors(src)
    if meta.get("format") not in FORMATS:
        raise CheckpointError(f"{src} is not a meddiff checkpoint (metadata format {meta.get('format')!r})")
    dest = Path(dest_file)
    try:
        with atomic_path(dest) as tmp:
            if half:
                small = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}
                save_file(small, str(tmp), metadata={**meta, "stored_dtype": "float16"})
            else:
                shutil.copyfile(src, tmp)
    except OSError as e:
        raise CheckpointError(f"could not write {dest}: {e.strerror or e}") from e
    return dest


@dataclass(frozen=True)
class TrainState:
    step: int
    elapsed_s: float


def load_train_state(ckpt_dir: str | Path, model: nn.Module, ema: nn.Module,
                     optimizer: torch.optim.Optimizer, scaler: Any = None, fmt: str = FORMAT) -> TrainState:
    """Restore raw weights, EMA weights, optimiser, grad scaler and torch CPU RNG from a folder
    (whose model file must have format `fmt`)."""
    d = Path(ckpt_dir)
    ema_t, meta = _read_safetensors(d / MODEL_FILE)
    check_format(d / MODEL_FILE, meta, fmt)
    state_t, _ = _read_safetensors(d / STATE_FILE)
    js = d / STATE_JSON
    try:
        info = json.loads(js.read_text())
        step = int(info["step"])
    except FileNotFoundError:
        raise CheckpointError(f"{js} does not exist") from None
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{js} is corrupt ({e})") from None
    _load_weights(ema, ema_t, d / MODEL_FILE)
    _load_weights(model, {k: v for k, v in state_t.items() if k.startswith("model.")}, d / STATE_FILE, "model.")
    device = next(model.parameters()).device
    opt_t = {k: v.to(device) if not k.endswith(".step") else v for k, v in state_t.items() if k.startswith("optim.")}
    try:
        if isinstance(optimizer, Mapping):  # a baseline's optimisers by name
            _restore_named_optimizers(optimizer, opt_t, info["optimizer"], d)
        else:
            _restore_optimizer(optimizer, opt_t, info["optimizer"])
    except (KeyError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{d}: optimiser state does not match the model ({e})") from None
    if scaler is not None and scaler.is_enabled() and info.get("scaler"):
        scaler.load_state_dict(info["scaler"])
    if "rng.torch_cpu" in state_t:
        torch.set_rng_state(state_t["rng.torch_cpu"])
    return TrainState(step=step, elapsed_s=float(info.get("elapsed_s", 0.0)))
