"""Which weights of a checkpoint to sample: the EMA average (model.safetensors, the default) or
the raw training weights (the "model.<name>" tensors of train_state.safetensors beside it).

The raw weights exist only in a checkpoint folder written by `meddiff train`; an exported model
file (`export_model`) holds the EMA weights alone. `ema_check` tells, from a checkpoint's config
and step, whether its EMA weights still hold a large share of the random initialisation
(`meddiff.checkpointing.ema.init_share`), the case where --weights raw is the better choice.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from ..config import Config
from ..errors import CheckpointError, InputError
from .ema import EMAWarning, init_share_warning
from .folders import STATE_FILE
from .formats import load_weights, read_safetensors, resolve_model_file

WEIGHTS = ("ema", "raw")
RAW_PREFIX = "model."


def raw_state_file(path: str | Path) -> Path:
    """train_state.safetensors of the checkpoint `path` resolves to (CheckpointError naming what is
    missing when there is none, e.g. for an exported model file)."""
    file = resolve_model_file(path)
    state = file.parent / STATE_FILE
    if not state.is_file():
        raise CheckpointError(f"--weights raw: {file} has no {STATE_FILE} beside it (the raw training weights "
                              "are only in checkpoint folders written by meddiff train; an exported model file "
                              "holds the EMA weights alone)")
    return state


def load_raw_weights(module: nn.Module, path: str | Path) -> Path:
    """Replace the (EMA) weights of a loaded `module` in place with the checkpoint's raw training
    weights; names and shapes are checked. Returns the state file read."""
    state = raw_state_file(path)
    tensors, _ = read_safetensors(state)
    raw = {k: v for k, v in tensors.items() if k.startswith(RAW_PREFIX)}
    if not raw:
        raise CheckpointError(f"{state} holds no raw weights ('{RAW_PREFIX}*' tensors)")
    ref = next(iter(module.parameters()))
    load_weights(module, {k: v.to(ref.dtype) if v.is_floating_point() else v for k, v in raw.items()}, state,
                  RAW_PREFIX)
    return state


def select_weights(module: nn.Module, path: str | Path, which: str) -> None:
    """`which` = "ema" keeps the loaded EMA weights; "raw" loads the raw ones into `module`."""
    if which not in WEIGHTS:
        raise InputError(f"--weights {which!r}: expected one of {', '.join(WEIGHTS)}")
    if which == "raw":
        load_raw_weights(module, path)


def ema_check(cfg: Config, step: int, which: str = "ema", where: str = "") -> str | None:
    """Warn (EMAWarning, and return the text) when sampling EMA weights that still hold more than
    1% of the initialisation after `step` steps of the checkpoint's EMA rule; None otherwise."""
    if which != "ema":
        return None
    t = cfg.train
    text = init_share_warning(step, t.ema_decay, t.ema_warmup, where=f"the EMA weights of {where or 'this checkpoint'}")
    if text:
        warnings.warn(text, EMAWarning, stacklevel=2)
    return text


def checkpoint_step(path: str | Path) -> int:
    """The training step stored in a checkpoint's model file metadata (reads the header only; 0 if absent)."""
    from safetensors import safe_open

    file = resolve_model_file(path)
    try:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            return int((f.metadata() or {}).get("step", "0"))
    except (ValueError, OSError) as e:
        raise CheckpointError(f"{file}: cannot read its step from the metadata ({e})") from None


def use_weights(module: nn.Module, path: str | Path, cfg: Config, which: str = "ema") -> str:
    """For `meddiff sample --weights`: load the chosen weights into the loaded `module` (see
    `select_weights`), warn when EMA weights are mostly initialisation (`ema_check`), and return
    a short description for the outputs ("EMA weights" / "raw weights")."""
    select_weights(module, path, which)
    ema_check(cfg, checkpoint_step(path), which, where=str(resolve_model_file(path)))
    return "EMA weights" if which == "ema" else "raw weights"
