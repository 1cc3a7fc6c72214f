"""Per-image noise: one torch.Generator per image, so a sample depends only on its own seed, never
on the batch it was sampled in (as EDM's StackedRandomGenerator). Used by every sampler."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


def randn_per_image(shape: Sequence[int], generators: Sequence[torch.Generator], device: torch.device) -> Tensor:
    """Standard normal noise [B, *shape[1:]], image i drawn from generators[i] (CPU), so a result
    depends only on its own seed, not on the batch it was sampled in."""
    if len(generators) != shape[0]:
        raise ValueError(f"need one generator per image: {len(generators)} generators for batch {shape[0]}")
    return torch.stack([torch.randn(tuple(shape[1:]), generator=g) for g in generators]).to(device)


def generators_for(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per seed."""
    return [torch.Generator().manual_seed(int(s)) for s in seeds]
