"""Reproducible, stateless data order: what a training step sees is a pure function of
(train.seed, step, position in the global batch), never of an iterator's history.

So a run resumed at step s draws exactly the batches, crops, degradations, timesteps and
noise an uninterrupted run would have drawn, and a run on N ranks with per-rank batch b
sees the same examples as one rank with batch N*b.

- Global batch of step s: positions p = s*G .. s*G + G - 1 with G = batch_size * world_size;
  rank r takes the r-th slice of batch_size positions.
- Position p -> example index: a fresh permutation of the dataset each epoch
  (epoch = p // N, seeded by (seed, epoch)), so every example is seen once per epoch.
- Before fetching position p the global torch / numpy / random RNGs are seeded from
  (seed, p): a dataset that draws its crops and degradations from them (the
  degradation contract with generator=None) is reproducible without knowing it.
- Timestep k and noise eps of the loss for position p come from a generator seeded by (seed, p).
"""

from __future__ import annotations

import random
from functools import lru_cache
from typing import Any, Iterator, NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

# stream tags so that the seeds of different uses never coincide
DATA, NOISE, STEP, VAL, TIME = 1, 2, 3, 4, 5  # TIME: the VDM's antithetic time offset of a step
DISTILL = 6  # the starting noise x_T of a distillation target (meddiff.distill.targets)
LABEL = 7  # the VDM's label dropout of classifier-free guidance (meddiff.vdm.vlb.label_drop)


def mix_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from a tuple of non-negative ints (numpy SeedSequence)."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


@lru_cache(maxsize=4)
def epoch_permutation(seed: int, epoch: int, n: int) -> Tensor:
    """The order of the n examples in one epoch, int64 [n]."""
    g = torch.Generator().manual_seed(mix_seed(seed, DATA, epoch))
    return torch.randperm(n, generator=g)


def rank_positions(step: int, batch_size: int, rank: int, world_size: int) -> range:
    """Global positions of the examples rank `rank` trains on at step `step` (0-based)."""
    start = step * batch_size * world_size + rank * batch_size
    return range(start, start + batch_size)


def index_at(position: int, n: int, seed: int) -> int:
    """Dataset index of global position `position` (epochs of fresh permutations)."""
    return int(epoch_permutation(seed, position // n, n)[position % n])


def seed_global_rngs(seed: int) -> None:
    """Seed torch's, numpy's and Python's global RNGs (torch also on CUDA) from one int."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


class StepBatches:
    """Batch sampler for DataLoader: for steps start..stop-1, the list of (index, seed) this rank fetches."""

    def __init__(self, n: int, seed: int, batch_size: int, rank: int, world_size: int, start: int, stop: int):
        if n < 1:
            raise ValueError("the training set is empty")
        self.n, self.seed, self.batch_size = n, seed, batch_size
        self.rank, self.world_size, self.start, self.stop = rank, world_size, start, stop

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start, self.stop):
            ps = rank_positions(step, self.batch_size, self.rank, self.world_size)
            yield [(index_at(p, self.n, self.seed), p) for p in ps]


class Batch(NamedTuple):
    x0: Tensor  # [B, 1, H, W] in [-1, 1]
    cond: Tensor  # [B, 1, H, W] degraded image in [-1, 1]
    mask: Tensor  # [B, 1, H, W] in {0, 1}
    case_id: list[str]
    position: Tensor  # int64 [B] global positions (seed the loss noise)


class SeededItems(Dataset):
    """Wraps a Dataset of Pair: item (index, position) seeds the global RNGs from (seed, position) first."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int]) -> tuple[Any, int]:
        index, position = item
        seed_global_rngs(mix_seed(self.seed, DATA, position))
        return self.dataset[index], position


def collate(items: Sequence[tuple[Any, int]]) -> Batch:
    """Stack Pair(x0, cond, mask, case_id) items ([1, H, W] tensors) into a Batch."""
    pairs = [p for p, _ in items]
    return Batch(
        x0=torch.stack([p.x0 for p in pairs]).float(),
        cond=torch.stack([p.cond for p in pairs]).float(),
        mask=torch.stack([p.mask for p in pairs]).float(),
        case_id=[str(p.case_id) for p in pairs],
        position=torch.tensor([pos for _, pos in items], dtype=torch.long),
    )


def loss_noise(seed: int, positions: Tensor, timesteps: int, shape: Sequence[int], stream: int = NOISE) -> tuple[Tensor, Tensor]:
    """Per-example timestep k (int64 [B], uniform in 0..T-1) and noise eps ([B, *shape], N(0, I)), on the CPU."""
    ks, eps = [], []
    for p in positions.tolist():
        g = torch.Generator().manual_seed(mix_seed(seed, stream, p))
        ks.append(torch.randint(0, timesteps, (1,), generator=g))
        eps.append(torch.randn(tuple(shape), generator=g))
    return torch.cat(ks), torch.stack(eps)
