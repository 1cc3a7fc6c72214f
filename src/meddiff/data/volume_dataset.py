"""Training pairs from prepared volumes (`meddiff prepare --mode volume`): 3D patches and 2.5D slice stacks.

    3D   (model.spatial_dims 3, data.patch [D, H, W]): Pair(x0 [1, D, H, W], cond [1, D, H, W], mask, case_id),
         a random patch of a volume (padded with the background -1 where the volume is smaller);
         task.sr_axis through: thick slices along D (ThickSliceSR, meddiff.data.thick).
    2.5D (task.context_slices K, model.spatial_dims 2): Pair(x0 [1, H, W], cond [2K+1, H, W], mask, case_id):
         slice z of a volume as the target; the condition is the task's 2D degradation of slices
         z-K .. z+K (edge slices repeated), ordered centre first (context_planes), so channel 0 is
         the degraded slice itself and the residual mode (x0 - cond[:, :1]) works unchanged.

train=True draws crops from torch's global RNG (the trainer seeds it per example); train=False is
deterministic (centred crops).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError
from .dataset import Pair
from .thick import thick_slice_condition
from .volumes import PreparedVolumes, load_volumes


@dataclass(frozen=True)
class ThickSliceSR:
    """Thick slices along the first spatial axis (dim 2 of [B, 1, D, ...]), cubic back; a [B, 1, H, W]
    slice is thickened along its rows (a coronal/sagittal reformat of an axial thick-slice series)."""

    factor: int = 4
    cond_channels: ClassVar[int] = 1

    def __call__(self, x0: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        return thick_slice_condition(x0, self.factor, 2, "cubic").clamp(-1.0, 1.0), torch.ones_like(x0)

    def model_condition(self, cond: Tensor, mask: Tensor) -> Tensor:
        return cond


def context_planes(planes: Tensor, context: int) -> Tensor:
    """Condition slices [N, 1, H, W] of one volume (in slice order) -> [N, 2K+1, H, W]: slice n first,
    then n-K .. n-1, n+1 .. n+K (indices clamped at the ends: edge slices repeated)."""
    n = planes.shape[0]
    offsets = [0] + [o for o in range(-context, context + 1) if o != 0]
    idx = torch.tensor([[min(max(i + o, 0), n - 1) for o in offsets] for i in range(n)])
    return planes[idx, 0]


@dataclass(frozen=True)
class ContextCondition:
    """2.5D: a 2D degradation applied to each slice of a stack [B, 2K+1, H, W] (slice order z-K .. z+K);
    cond [B, 2K+1, H, W] centre first, mask [B, 1, H, W] of the centre slice."""

    inner: object
    context: int

    @property
    def cond_channels(self) -> int:
        return 2 * self.context + 1

    def __call__(self, stack: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        b, c, h, w = stack.shape
        if c != self.cond_channels:
            raise InputError(f"2.5D degradation: expected {self.cond_channels} slices per stack, got {c}")
        cond, mask = self.inner(stack.reshape(b * c, 1, h, w), generator=generator)
        order = [self.context] + [i for i in range(c) if i != self.context]
        return cond.reshape(b, c, h, w)[:, order], mask.reshape(b, c, h, w)[:, self.context : self.context + 1]

    def model_condition(self, cond: Tensor, mask: Tensor) -> Tensor:
        return cond


def _window(length: int, size: int, train: bool) -> int:
    """Start of a window of `size` in an axis of `length` (random when training, centred otherwise)."""
    if length <= size:
        return 0
    return int(torch.randint(0, length - size + 1, ())) if train else (length - size) // 2


def crop_padded(array: np.ndarray, size: tuple[int, ...], train: bool) -> Tensor:
    """A window of `size` over the last len(size) axes of `array`, padded with -1 where it is smaller."""
    lead = array.ndim - len(size)
    starts = [_window(array.shape[lead + i], s, train) for i, s in enumerate(size)]
    view = array[(Ellipsis, *(slice(a, a + s) for a, s in zip(starts, size)))]
    out = torch.full((*array.shape[:lead], *size), -1.0)
    out[(Ellipsis, *(slice(0, n) for n in view.shape[lead:]))] = torch.from_numpy(np.array(view, dtype=np.float32))
    return out


class VolumePatchDataset(torch.utils.data.Dataset):
    """3D patches [1, D, H, W] of the volumes of one split, one item per volume per epoch."""

    def __init__(self, prepared: PreparedVolumes, split: str, degradation, patch: tuple[int, int, int], *, train: bool = True):
        self.prepared, self.split, self.degradation, self.patch, self.train = prepared, split, degradation, tuple(patch), train
        if not prepared.rows[split]:
            raise InputError(f"split {split!r} of {prepared.root} has no volumes")

    def __len__(self) -> int:
        return len(self.prepared.rows[self.split])

    def __getitem__(self, index: int) -> Pair:
        x0 = crop_padded(self.prepared.array(self.split, index), self.patch, self.train)[None]
        cond, mask = self.degradation(x0[None])
        return Pair(x0, cond[0], mask[0], self.prepared.rows[self.split][index]["case_id"])


class SliceStackDataset(torch.utils.data.Dataset):
    """2.5D: every slice (with foreground) of the split's volumes, with K neighbours either side."""

    def __init__(self, prepared: PreparedVolumes, split: str, degradation: ContextCondition, size: int, *,
                 train: bool = True, min_foreground: float = 0.05):
        self.prepared, self.split, self.degradation, self.size, self.train = prepared, split, degradation, size, train
        self.items = [(v, z) for v in range(len(prepared.rows[split]))
                      for z, fg in enumerate((prepared.array(split, v) > -0.9).mean((1, 2))) if fg >= min_foreground]
        if not self.items:
            raise InputError(f"split {split!r} of {prepared.root} has no slices with foreground >= {min_foreground}")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Pair:
        v, z = self.items[index]
        vol = self.prepared.array(self.split, v)
        k = self.degradation.context
        stack = vol[np.clip(np.arange(z - k, z + k + 1), 0, vol.shape[0] - 1)]
        x = crop_padded(stack, (self.size, self.size), self.train)
        cond, mask = self.degradation(x[None])
        return Pair(x[k : k + 1], cond[0], mask[0], f"{self.prepared.rows[self.split][v]['case_id']}_z{z:04d}")


def build_volume_datasets(cfg, train_deg, val_deg):
    """(train set, val set or None) of data.mode volume: 3D patches or 2.5D stacks from data.prepared."""
    from ..errors import ConfigError

    prep = load_volumes(cfg.data.prepared)
    multiple = 2 ** (len(cfg.model.channels) - 1)
    sizes = cfg.data.patch if cfg.model.spatial_dims == 3 else (cfg.data.crop or cfg.data.size,)
    if any(s % multiple for s in sizes):
        raise ConfigError(f"data.patch / data.crop: {list(sizes)} must be multiples of {multiple} for a U-Net with "
                          f"{len(cfg.model.channels)} levels")

    def make(split: str, deg, train: bool):
        if cfg.model.spatial_dims == 3:
            return VolumePatchDataset(prep, split, deg, cfg.data.patch, train=train)
        deg = deg if isinstance(deg, ContextCondition) else ContextCondition(deg, 0)
        return SliceStackDataset(prep, split, deg, sizes[0], train=train)

    train_set = make(cfg.data.train_split, train_deg, True)
    try:
        val_set = make(cfg.data.val_split, val_deg, False)
    except InputError:
        val_set = None
    return train_set, val_set
