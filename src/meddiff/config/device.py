"""Where a network runs, a setting the user gives (`train.device`, `--device`): the one rule that turns a
device name (`auto`, `cpu`, `cuda`, `cuda:N`) into a torch.device, shared by training
(meddiff.train.distributed: one device per torchrun rank), restoring (meddiff.restore: local and Ray
workers) and the commands that score or sample.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError


def pick_device(name: str, local_rank: int = 0, what: str | None = None) -> torch.device:
    """'auto' -> cuda:LOCAL_RANK if CUDA is available else cpu; otherwise torch.device(name).
    what: how the user gave it, for messages (default "train.device"; the commands pass "--device")."""
    if what is not None:
        try:
            return pick_device(name, local_rank)
        except ConfigError as e:
            raise ConfigError(str(e).replace(f"train.device: {name!r}", f"{what} {name}", 1)) from None
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device: {name!r} is not a device (expected auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name!r} requested but CUDA is not available")
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    return device
