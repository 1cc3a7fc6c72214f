"""Data-parallel training with `torchrun`: one code path for one or many processes.

`torchrun --nproc_per_node N -m meddiff.cli train ...` sets RANK, WORLD_SIZE and LOCAL_RANK;
`setup` then joins the process group (NCCL on CUDA, Gloo on CPU). Without those variables
the world has size 1 and no process group is made: the same loop runs, the model is simply
not wrapped in DistributedDataParallel and the collectives below are no-ops.

`train.batch_size` is per rank: a step consumes a global batch of batch_size * world_size
examples, rank r taking positions [r * batch_size, (r + 1) * batch_size) of it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..config.device import pick_device


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes logs, plots and checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device_name: str = "auto") -> DistEnv:
    """Read the torchrun environment and join the process group if WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_name, local)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistEnv(rank=rank, world_size=world, local_rank=local, device=device)


def cleanup(env: DistEnv) -> None:
    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def wrap(model: nn.Module, env: DistEnv) -> nn.Module:
    """DistributedDataParallel(model) when distributed (gradients averaged over ranks), else model."""
    if not env.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [env.device.index] if env.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def mean_over_ranks(value: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Average of a (detached) tensor over all ranks; the tensor itself when not distributed."""
    if not env.distributed:
        return value
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / env.world_size


def any_rank(flag: bool, env: DistEnv) -> bool:
    """True on every rank if `flag` is True on any rank (so all ranks stop together)."""
    if not env.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=env.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)
