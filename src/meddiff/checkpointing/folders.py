"""Training checkpoint folders: safetensors + JSON + YAML only (loading never unpickles anything).

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
to sample (`meddiff.diffusion.checkpoint.load_model`, `meddiff.vdm.checkpoint.load_vdm`, ...).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import yaml
from safetensors.torch import save_file
from torch import nn

from .. import config as config_mod
from ..config import Config
from ..errors import CheckpointError
from ..io.atomic import atomic_path, atomic_write_text
from .formats import (CONFIG_FILE, FORMAT, FORMATS, LATEST, MODEL_FILE, check_format, latest_checkpoint, load_weights,
                      read_safetensors, resolve_model_file)

log = logging.getLogger(__name__)

STATE_FILE = "train_state.safetensors"
STATE_JSON = "train_state.json"


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



def init_weights(module: nn.Module, path: str | Path, fmt: str = FORMAT) -> Path:
    """Load the (EMA) weights of a model file / checkpoint / run folder into `module`, in place, for
    `train.init_from` (fine-tuning: the optimiser starts fresh). Names and shapes must match the
    configured model; errors name the file and the first mismatching tensor. Returns the file read."""
    file = resolve_model_file(path)
    tensors, meta = read_safetensors(file)
    check_format(file, meta, fmt)
    ref = next(iter(module.parameters()))
    tensors = widen_input_planes(tensors, module.state_dict(), file)
    tensors = add_conditioning(tensors, module.state_dict(), file)
    load_weights(module, {k: v.to(ref.dtype) for k, v in tensors.items()}, file)
    return file


CONDITIONING = ("class_embedding.", "score.unet.cond_proj.")  # a class-conditional VDM's new tensors


def add_conditioning(tensors: dict[str, torch.Tensor], own: dict[str, torch.Tensor], where: Path) -> dict[str, torch.Tensor]:
    """A class-conditional VDM initialised from an unconditional one: the class embedding and the U-Net's
    conditioning projection are absent from the file and keep the model's own initialisation (the
    projection starts at zero, so the new model starts as exactly the old one). Only those tensors may
    be missing; load_weights names any other mismatch."""
    new = [k for k in own if k not in tensors and k.startswith(CONDITIONING)]
    if not new or any(k.startswith(CONDITIONING) for k in tensors):
        return tensors
    log.info("%s: no class conditioning; %s start from the model's initialisation (the projection at zero)",
             where, ", ".join(new))
    return {**tensors, **{k: own[k].detach().clone() for k in new}}


INPUT_CONV = "conv_in.weight"  # the U-Net's first convolution: input planes = [x_t, condition planes]


def widen_input_planes(tensors: dict[str, torch.Tensor], own: dict[str, torch.Tensor], where: Path) -> dict[str, torch.Tensor]:
    """A model whose condition carries more planes (2.5D: the slice and its neighbours) initialised from
    one with fewer (2D): the first convolution's extra input planes start at zero, so the new model
    starts as exactly the old one and learns to use the neighbours. Every other shape must match."""
    got, want = tensors.get(INPUT_CONV), own.get(INPUT_CONV)
    if got is None or want is None or got.shape == want.shape:
        return tensors
    if got.shape[0] != want.shape[0] or got.shape[2:] != want.shape[2:] or got.shape[1] > want.shape[1]:
        return tensors  # not a widening: load_weights names the mismatch
    wide = torch.zeros(want.shape, dtype=got.dtype)
    wide[:, : got.shape[1]] = got
    log.info("%s: %s widened from %d to %d input planes (the new planes start at zero)", where, INPUT_CONV,
             got.shape[1], want.shape[1])
    return {**tensors, INPUT_CONV: wide}


def export_model(ckpt: str | Path, dest_file: str | Path, *, half: bool = False) -> Path:
    """Copy a checkpoint's model.safetensors (EMA weights + config) to dest_file atomically.

    half=True stores floating-point weights as float16 (half the size, for shipping a model
    in a repository); `load_model` casts them back to float32. Metadata gains
    "stored_dtype": "float16". (Writing the network as TorchScript, ONNX or a MONAI bundle is meddiff.export.)
    """
    src = resolve_model_file(ckpt)
    tensors, meta = read_safetensors(src)
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
    ema_t, meta = read_safetensors(d / MODEL_FILE)
    check_format(d / MODEL_FILE, meta, fmt)
    state_t, _ = read_safetensors(d / STATE_FILE)
    js = d / STATE_JSON
    try:
        info = json.loads(js.read_text())
        step = int(info["step"])
    except FileNotFoundError:
        raise CheckpointError(f"{js} does not exist") from None
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{js} is corrupt ({e})") from None
    load_weights(ema, ema_t, d / MODEL_FILE)
    load_weights(model, {k: v for k, v in state_t.items() if k.startswith("model.")}, d / STATE_FILE, "model.")
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
