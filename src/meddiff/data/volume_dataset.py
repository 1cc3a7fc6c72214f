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
from .synth import synth_brain_stack
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
    """2.5D: every slice (with foreground) of the split's volumes, with K neighbours either side.

    axes: the volume axes whose planes are slices (0 = the prepared volumes' S axis: axial; 1 coronal,
    2 sagittal); stride (low, high): the neighbours are `stride` voxels apart, drawn per item in
    training (the low value otherwise), so one model serves series of different slice spacings;
    stride 0 repeats the slice itself (what a single 2D image gives the model: no neighbours).
    """

    def __init__(self, prepared: PreparedVolumes, split: str, degradation: ContextCondition, size: int, *,
                 train: bool = True, min_foreground: float = 0.05, axes: tuple[int, ...] = (0,),
                 stride: tuple[int, int] = (1, 1)):
        self.prepared, self.split, self.degradation, self.size, self.train = prepared, split, degradation, size, train
        self.axes, self.stride = tuple(axes), tuple(stride)
        self.items = [(v, a, z) for v in range(len(prepared.rows[split])) for a in self.axes
                      for z, fg in enumerate(_foreground(prepared.array(split, v), a)) if fg >= min_foreground]
        if not self.items:
            raise InputError(f"split {split!r} of {prepared.root} has no slices with foreground >= {min_foreground}")

    def __len__(self) -> int:
        return len(self.items)

    def draw_stride(self) -> int:
        lo, hi = self.stride
        return int(torch.randint(lo, hi + 1, ())) if self.train and hi > lo else lo

    def stack(self, index: int) -> Tensor:
        """The (cropped) target stack [2K+1, size, size] of item `index`, slice order."""
        v, a, z = self.items[index]
        vol = np.moveaxis(self.prepared.array(self.split, v), a, 0)
        k = self.degradation.context
        idx = np.clip(z + self.draw_stride() * np.arange(-k, k + 1), 0, vol.shape[0] - 1)
        return crop_padded(vol[idx], (self.size, self.size), self.train)

    def case(self, index: int) -> str:
        v, a, z = self.items[index]
        return f"{self.prepared.rows[self.split][v]['case_id']}_{'zyx'[a]}{z:04d}"

    def __getitem__(self, index: int) -> Pair:
        x = self.stack(index)
        cond, mask = self.degradation(x[None])
        k = self.degradation.context
        return Pair(x[k : k + 1], cond[0], mask[0], self.case(index))


def _foreground(vol: np.ndarray, axis: int) -> np.ndarray:
    other = tuple(i for i in range(3) if i != axis)
    return (vol > -0.9).mean(other)


class MixedStacks(torch.utils.data.Dataset):
    """2.5D training stacks of a SliceStackDataset, a `fraction` of them replaced by synthetic
    random-contrast MNI152 tissue stacks (meddiff.data.synth.synth_brain_stack, planes `stride` mm
    apart), each passed through `appearance` (one gamma and bias field per stack) and the degradation.
    Randomness from torch's global RNG, as the other training sets."""

    def __init__(self, real: SliceStackDataset, *, fraction: float = 0.0, appearance=None):
        if not 0.0 <= fraction <= 1.0:
            raise InputError(f"augment.synth_fraction: expected a fraction in [0, 1], got {fraction}")
        self.real, self.fraction, self.appearance = real, fraction, appearance

    def __len__(self) -> int:
        return len(self.real)

    def __getitem__(self, index: int) -> Pair:
        k = self.real.degradation.context
        if self.fraction > 0 and float(torch.rand(())) < self.fraction:
            planes = synth_brain_stack(2 * k + 1, self.real.draw_stride(), None, window=self.real.size + self.real.size // 2)
            x, case = crop_padded(planes.numpy(), (self.real.size, self.real.size), True), "synthetic"
        else:
            x, case = self.real.stack(index), self.real.case(index)
        if self.appearance is not None:
            x = self.appearance(x[None])[0]
        cond, mask = self.real.degradation(x[None])
        return Pair(x[k : k + 1].contiguous(), cond[0], mask[0], case)


def build_volume_datasets(cfg, train_deg, val_deg, *, appearance=None, synth_fraction: float = 0.0):
    """(train set, val set or None) of data.mode volume: 3D patches or 2.5D stacks from data.prepared;
    2.5D training stacks may get an appearance augmentation and a fraction of synthetic stacks."""
    from ..errors import ConfigError

    prep = load_volumes(cfg.data.prepared)
    multiple = 2 ** (len(cfg.model.channels) - 1)
    sizes = cfg.data.patch if cfg.model.spatial_dims == 3 else (cfg.data.crop or cfg.data.size,)
    if any(s % multiple for s in sizes):
        raise ConfigError(f"data.patch / data.crop: {list(sizes)} must be multiples of {multiple} for a U-Net with "
                          f"{len(cfg.model.channels)} levels")

    axes, stride = tuple(cfg.data.stack_axes), tuple(cfg.data.context_stride)
    if not axes or any(a not in (0, 1, 2) for a in axes):
        raise ConfigError(f"data.stack_axes: expected volume axes among 0, 1, 2, got {list(axes)}")
    if len(stride) != 2 or not 0 <= stride[0] <= stride[1]:
        raise ConfigError(f"data.context_stride: expected [low, high] with 0 <= low <= high, got {list(stride)}")

    def make(split: str, deg, train: bool):
        if cfg.model.spatial_dims == 3:
            return VolumePatchDataset(prep, split, deg, cfg.data.patch, train=train)
        deg = deg if isinstance(deg, ContextCondition) else ContextCondition(deg, 0)
        return SliceStackDataset(prep, split, deg, sizes[0], train=train, axes=axes if train else (0,), stride=stride)

    train_set = make(cfg.data.train_split, train_deg, True)
    if appearance is not None or synth_fraction > 0:
        if cfg.model.spatial_dims == 3:
            raise ConfigError("augment: appearance and synthetic contrasts apply to 2.5D stacks only, not to 3D patches")
        train_set = MixedStacks(train_set, fraction=synth_fraction, appearance=appearance)
    try:
        val_set = make(cfg.data.val_split, val_deg, False)
    except InputError:
        val_set = None
    return train_set, val_set
