"""Noise rules of sampling: per-image generators, and noise independent per slice or shared across a volume.

Per-image noise: one torch.Generator per image, so a sample depends only on its own seed, never
on the batch it was sampled in (as EDM's StackedRandomGenerator). Used by every sampler.

Noise of the slices of one volume: slice-by-slice restoration of a volume draws each slice's noise
from its own seed (samplers.run.image_seed(seed, slice, sample)), so the detail a sampler adds to
slice z and slice z+1 is unrelated and does not line up in a coronal or sagittal reformat.

"shared" gives every slice of one volume the same noise: the same initial x_T and, for the
stochastic samplers (ancestral, DDIM eta > 0), the same noise at every step, because each slice's
generator is seeded with the seed of slice 0 and every slice draws tensors of the same shape in
the same order. With a deterministic sampler (DPM-Solver++, DDIM eta 0) the result is then a
deterministic function of the condition alone, so similar conditions in neighbouring slices give
similar added detail. Sample s of --samples N still has its own noise (s stays in the seed), so
the spread over samples measures uncertainty as before.

Defaults: `meddiff sample --noise` is "shared" (its slices are the slices of one volume; in
benchmarks/volumes.py shared noise kept PSNR/SSIM and lowered the through-plane error, README
"Volumes"); samplers.run.restore keeps "independent" (a batch there may hold unrelated images).

Slice 0's noise is the same in both modes (shared mode reuses slice 0's seed), so slice 0's result
does not depend on the mode.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ..errors import InputError

NOISE_MODES = ("independent", "shared")


def randn_per_image(shape: Sequence[int], generators: Sequence[torch.Generator], device: torch.device) -> Tensor:
    """Standard normal noise [B, *shape[1:]], image i drawn from generators[i] (CPU), so a result
    depends only on its own seed, not on the batch it was sampled in."""
    if len(generators) != shape[0]:
        raise ValueError(f"need one generator per image: {len(generators)} generators for batch {shape[0]}")
    return torch.stack([torch.randn(tuple(shape[1:]), generator=g) for g in generators]).to(device)


def generators_for(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per seed."""
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def check_noise(noise: str) -> str:
    """`noise` if it is a known mode; InputError naming the value otherwise."""
    if noise not in NOISE_MODES:
        raise InputError(f"noise {noise!r}: expected one of {list(NOISE_MODES)}")
    return noise


def seed_index(noise: str, index: int) -> int:
    """The slice index whose seed slice `index` uses: its own (independent) or slice 0's (shared)."""
    return 0 if noise == "shared" else index
