"""The teacher's targets a student learns from, computed once into a file.

Target i of a split: the pair (x0, condition) the training data gives at position i (the training
split's crops and augmentations drawn as the training loop draws them, seeded by (train.seed, i);
evenly spaced val items), the starting noise x_T ~ N(0, I) from a generator seeded by
(train.seed, DISTILL, i), and the teacher's deterministic sample from that x_T (its ODE sampler,
DPM-Solver++ or DDIM with eta 0, `distill.steps` calls): exactly what
`meddiff.samplers.run.restore` would return for that noise.

The file (safetensors: planes [K, C_cond, H, W], noise [K, 1, H, W], target [K, 1, H, W], image space
[-1, 1]) is rewritten atomically every minute while it grows, with the settings that define it in its
metadata: an interrupted run resumes where it stopped, a larger `distill.items` extends it, and a
file made with other settings (another teacher, sampler, data or seed) is refused by name.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor
from torch.utils.data import Dataset
from tqdm import tqdm

from .. import config as config_mod
from ..config import Config
from ..data.dataset import Pair
from ..data.order import DISTILL, SeededItems, index_at, mix_seed
from ..diffusion.denoiser import DDPMDenoiser
from ..errors import InputError
from ..io.atomic import atomic_path
from ..samplers.ddim import sample_ddim
from ..samplers.dpm_solver import sample_dpm_solver_pp
from ..samplers.noise import generators_for, randn_per_image

log = logging.getLogger(__name__)
SAVE_EVERY_S = 60.0
KEYS = ("planes", "noise", "target")


def teacher_grid(sampler: str, grid: str) -> str:
    """The time grid "auto" means for the teacher's sampler, as `meddiff sample` resolves it
    (inference.sampler_options: log-SNR for DPM-Solver++, uniform for DDIM)."""
    from ..samplers.run import sampler_options

    return str(sampler_options(sampler, "beta", 0.0, grid).get("grid", grid))


@torch.no_grad()
def teacher_targets(teacher: DDPMDenoiser, planes: Tensor, seeds: Sequence[int], sampler: str, steps: int,
                    grid: str) -> tuple[Tensor, Tensor]:
    """(x_T [B, 1, H, W], the teacher's sample [B, 1, H, W] in image space) for condition planes
    [B, C_cond, H, W]: x_T image b from a generator seeded seeds[b], the sample the ODE sampler
    (dpm_solver_pp 2M or ddim eta 0) draws from the same generator, i.e. from that x_T."""
    shape = (planes.shape[0], 1, *planes.shape[2:])
    x_T = randn_per_image(shape, generators_for(seeds), planes.device)
    times = teacher.time_grid(steps, teacher_grid(sampler, grid))
    if sampler == "dpm_solver_pp":
        out = sample_dpm_solver_pp(teacher, planes, times, generators=generators_for(seeds))
    elif sampler == "ddim":
        out = sample_ddim(teacher, planes, times, eta=0.0, generators=generators_for(seeds))
    else:
        raise ValueError(f"teacher sampler {sampler!r}: expected dpm_solver_pp or ddim (deterministic ODE samplers)")
    return x_T, out


def item_seed(seed: int, split: str, i: int) -> int:
    """The seed of target i's starting noise."""
    return mix_seed(seed, DISTILL, 0 if split == "train" else 1, i)


def settings_key(cfg: Config, teacher_sha256: str, split: str) -> str:
    """Everything that defines the targets of a split, as canonical JSON (the file's metadata)."""
    d = cfg.distill
    return json.dumps({"teacher_sha256": teacher_sha256, "sampler": d.sampler, "steps": d.steps,
                       "grid": teacher_grid(d.sampler, d.grid), "split": split, "seed": cfg.train.seed,
                       "data": config_mod.to_dict(cfg.data), "task": config_mod.to_dict(cfg.task),
                       "augment": config_mod.to_dict(cfg.augment)}, sort_keys=True)


def read_targets(path: Path, key: str) -> dict[str, Tensor]:
    """The targets stored at `path` ({} if none); InputError if they were made with other settings."""
    if not path.is_file():
        return {}
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file
        raise InputError(f"{path}: not a readable targets file ({e}); delete it or set distill.cache") from None
    if meta.get("settings") != key:
        raise InputError(f"{path} holds distillation targets made with other settings (teacher, sampler, steps, "
                         f"data or seed): delete it or set distill.cache to a new file\n  file: {meta.get('settings')}\n"
                         f"  now:  {key}")
    return tensors


def write_targets(path: Path, tensors: dict[str, Tensor], key: str) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"settings": key})


def build_targets(path: Path, key: str, count: int, item: Callable[[int], Pair], planes_of: Callable[[Pair], Tensor],
                  make: Callable[[Tensor, list[int]], tuple[Tensor, Tensor]], seed_of: Callable[[int], int],
                  batch: int, progress: bool = True) -> dict[str, Tensor]:
    """The first `count` targets: those already in `path`, then the rest in batches of `batch`
    (item(i) -> Pair, planes_of(pair) -> [C_cond, H, W], make(planes [B, ...], seeds) -> (x_T, target)),
    the file rewritten every SAVE_EVERY_S seconds and at the end."""
    have = read_targets(path, key)
    done = int(have["target"].shape[0]) if have else 0
    if done >= count:
        return {k: v[:count] for k, v in have.items()}
    parts = {k: [have[k]] if have else [] for k in KEYS}
    bar = tqdm(total=count, initial=done, desc=f"teacher targets {path.name}", unit="item", disable=not progress)
    last = time.perf_counter()
    for s in range(done, count, batch):
        ids = list(range(s, min(s + batch, count)))
        planes = torch.stack([planes_of(item(i)) for i in ids])
        x_T, target = make(planes, [seed_of(i) for i in ids])
        for k, v in zip(KEYS, (planes, x_T, target)):
            parts[k].append(v.float().cpu())
        bar.update(len(ids))
        if time.perf_counter() - last > SAVE_EVERY_S or ids[-1] == count - 1:
            write_targets(path, {k: torch.cat(v) for k, v in parts.items()}, key)
            last = time.perf_counter()
    bar.close()
    return {k: torch.cat(v) for k, v in parts.items()}


def train_item(train_set: Dataset, seed: int) -> Callable[[int], Pair]:
    """Item i of the training targets: the training pair at position i of the data order (augmentations
    seeded as the training loop seeds them)."""
    items, n = SeededItems(train_set, seed), len(train_set)  # type: ignore[arg-type]
    return lambda i: items[(index_at(i, n, seed), i)][0]


def val_item(val_set: Dataset, count: int) -> Callable[[int], Pair]:
    """Item i of `count` evenly spaced val items (the val set is deterministic)."""
    n = len(val_set)  # type: ignore[arg-type]
    return lambda i: val_set[round(i * (n - 1) / max(1, count - 1))]


@dataclass
class DistilledPairs(Dataset):
    """The targets as training pairs: Pair(x0 = teacher sample [1, H, W], cond = the condition planes with
    the starting noise x_T as the LAST plane [C_cond + 1, H, W], mask zeros, case_id "distill_i").
    The student's step splits cond back (meddiff.objectives.distill.split_noise)."""

    planes: Tensor
    noise: Tensor
    target: Tensor

    def __len__(self) -> int:
        return int(self.target.shape[0])

    def __getitem__(self, i: int) -> Pair:
        return Pair(self.target[i], torch.cat([self.planes[i], self.noise[i]]), torch.zeros_like(self.target[i]),
                    f"distill_{i}")
