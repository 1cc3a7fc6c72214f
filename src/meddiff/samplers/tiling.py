"""Sliding-window (tiled) sampling for images too large for one network call.

The sampler keeps ONE full-size state per image: its noise is drawn once for the whole image
from the image's generator, as without tiling. Only the denoiser is tiled: at every sampler step
the network runs on overlapping windows of x_t and the condition, and the x0 predictions
are blended with weights that fall smoothly to the window edges inside the image (as MONAI's
``sliding_window_inference`` blends, but inside each step rather than once on the output). Tiles
therefore agree at every step; near a window edge a prediction sees less context, so tiled
output differs slightly from one whole-image call where both fit (measured in
tests/samplers/test_tiling.py).

Windows start at multiples of the network's size multiple, so every window's downsampling grid
is the whole image's grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from ..errors import FieldError, InputError


def tile_starts(size: int, tile: int, overlap: int, multiple: int = 1) -> list[int]:
    """Start offsets of windows of length `tile` covering [0, size), neighbours overlapping by
    at least `overlap`; every start a multiple of `multiple` (size and tile must be multiples)."""
    if tile >= size:
        return [0]
    stride = max(multiple, (tile - overlap) // multiple * multiple)
    starts = list(range(0, size - tile, stride))
    return starts + [size - tile]


def ramp_weights(length: int, overlap: int, ramp_start: bool, ramp_end: bool) -> Tensor:
    """1D blending weights [length] (float64): 1 inside, sin^2 rising over the first `overlap`
    samples (if ramp_start) and cos^2 falling over the last (if ramp_end); never zero. Two
    windows overlapping by exactly `overlap` have weights summing to 1 there."""
    w = torch.ones(length, dtype=torch.float64)
    if overlap > 0:
        rise = torch.sin(math.pi / 2 * (torch.arange(overlap, dtype=torch.float64) + 0.5) / overlap) ** 2
        if ramp_start:
            w[:overlap] = rise
        if ramp_end:
            w[length - overlap:] = torch.minimum(w[length - overlap:], rise.flip(0))
    return w


@dataclass(frozen=True)
class Tile:
    """One window: (start, stop) per spatial axis, and its blending weights [*window]."""

    box: tuple[tuple[int, int], ...]
    weight: Tensor

    @property
    def index(self) -> tuple[slice, ...]:
        return (..., *(slice(a, b) for a, b in self.box))


def tile_grid(shape: Sequence[int], tile: Sequence[int], overlap: int, multiple: int = 1) -> list[Tile]:
    """The windows covering a spatial `shape` (each axis a multiple of `multiple`) with their
    weights; `tile` is rounded down to multiples of `multiple`; a window edge on the image's
    border gets no ramp. overlap must be at most half a window."""
    tiles = [min(s, max(multiple, t // multiple * multiple)) for s, t in zip(shape, tile)]
    if overlap < 0 or any(overlap > t // 2 for t, s in zip(tiles, shape) if t < s):
        raise InputError(f"tile overlap {overlap}: expected 0 <= overlap <= half the tile size {tiles}")
    axes = []
    for s, t in zip(shape, tiles):
        axes.append([(a, a + t, ramp_weights(t, min(overlap, t // 2), a > 0, a + t < s))
                     for a in tile_starts(s, t, overlap, multiple)])
    out = []
    for combo in _product(axes):
        w = combo[0][2]
        for _, _, wa in combo[1:]:
            w = w[..., None] * wa
        out.append(Tile(tuple((a, b) for a, b, _ in combo), w))
    return out


def _product(axes: list[list]) -> list[list]:
    combos: list[list] = [[]]
    for ax in axes:
        combos = [c + [a] for c in combos for a in ax]
    return combos


class TiledDenoiser:
    """A denoiser evaluated window by window: same contract as the wrapped one,
    ``x0_hat = tiled(x_t, k, cond)`` on full-size ``[B, C, *spatial]`` tensors.

    tile: window size per spatial axis; overlap: pixels shared by neighbours (>= the ramp);
    batch: images per network call (windows of the B images are stacked up to it);
    on_call(fraction): called after each network call with the number of full-image calls it
    was worth (progress). Other attributes (sched, from_diffused, size_multiple, ...) are the wrapped one's.
    """

    def __init__(self, denoiser, tile: Sequence[int], overlap: int, batch: int = 1,
                 on_call: Callable[[float], None] | None = None):
        self.inner = denoiser
        self.tile, self.overlap, self.batch, self.on_call = tuple(tile), int(overlap), max(1, int(batch)), on_call
        self.multiple = denoiser.size_multiple

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def __call__(self, x: Tensor, k: Tensor, cond: Tensor) -> Tensor:
        spatial = x.shape[2:]
        tiles = tile_grid(spatial, self.tile, self.overlap, self.multiple)
        x0_sum = torch.zeros_like(x)
        w_sum = torch.zeros(spatial, dtype=x.dtype, device=x.device)
        per_call = max(1, self.batch // x.shape[0])
        for i in range(0, len(tiles), per_call):
            group = tiles[i:i + per_call]
            xs = torch.cat([x[t.index] for t in group])
            cs = torch.cat([cond[t.index] for t in group])
            x0 = self.inner(xs, k.repeat(len(group)), cs)
            for j, t in enumerate(group):
                w = t.weight.to(x.device, x.dtype)
                part = slice(j * x.shape[0], (j + 1) * x.shape[0])
                x0_sum[t.index] += w * x0[part]
                w_sum[t.index[1:]] += w
            if self.on_call is not None:
                self.on_call(x.shape[0] * len(group) / len(tiles))
        return x0_sum / w_sum


@dataclass(frozen=True)
class Plan:
    """How to run: images per sampler batch, window size (None = whole image), windows per call,
    and the estimated peak bytes of the run."""

    batch: int
    tile: tuple[int, ...] | None
    overlap: int
    tiles_per_call: int
    estimate: int


def state_bytes(images: int, planes: int, spatial: Sequence[int]) -> int:
    """Full-size tensors a sampler keeps per batch (x, up to 3 x0 estimates, base, eps and the
    blending sums, output) plus the condition planes, float32."""
    return images * (10 + planes) * math.prod(spatial) * 4


def _largest(fits: Callable[[int], bool], upto: int) -> int:
    """Largest n in 1..upto with fits(n) (fits is monotone), or 0."""
    best = 0
    for n in range(1, upto + 1):
        if not fits(n):
            break
        best = n
    return best


def plan_sampling(call_bytes: Callable[[int, Sequence[int]], int], spatial: Sequence[int], planes: int, *,
                  batch: int, budget: int, multiple: int = 1, tile: int | None = None,
                  overlap: int | None = None, min_tile: int = 32) -> Plan:
    """Choose batch and tiling so that the estimated peak (call_bytes(images, window) + the
    sampler's full-size state) stays within `budget` bytes: the whole image at the largest batch
    that fits; else the largest square window (at least min_tile, rounded to `multiple`) that
    fits at batch 1, overlapping by `overlap` (default: a quarter window). A given `tile`
    forces tiling at that size. Raises InputError when even one window cannot fit."""
    spatial = tuple(int(s) for s in spatial)
    if tile is None:
        fit = _largest(lambda b: call_bytes(b, spatial) + state_bytes(b, planes, spatial) <= budget, batch)
        if fit:
            return Plan(fit, None, 0, 1, call_bytes(fit, spatial) + state_bytes(fit, planes, spatial))
        sizes = _window_sizes(max(spatial), multiple, min_tile)
    else:
        if tile < multiple:
            raise FieldError("tile_size", tile, f"expected at least the network's size multiple {multiple}")
        sizes = [tile // multiple * multiple]
    for t in sizes:
        window = tuple(min(s, t) for s in spatial)
        ov = (t // 4 if overlap is None else int(overlap))
        b = _largest(lambda n: call_bytes(n, window) + state_bytes(n, planes, spatial) <= budget, batch)
        if b:
            per = _largest(lambda g: call_bytes(b * g, window) + state_bytes(b, planes, spatial) <= budget, batch // b or 1)
            return Plan(b, window, ov, per, call_bytes(b * per, window) + state_bytes(b, planes, spatial))
    t = sizes[-1]
    window = tuple(min(s, t) for s in spatial)
    need = call_bytes(1, window) + state_bytes(1, planes, spatial)
    raise FieldError("max_memory", text=f"one {'x'.join(map(str, window))} window of a {'x'.join(map(str, spatial))} image "
                     f"needs about {need / 1e9:.2f} GB, more than the {budget / 1e9:.2f} GB left under {{max_memory}}: "
                     "raise {max_memory} or give a smaller {tile_size}")


def _window_sizes(largest: int, multiple: int, smallest: int) -> list[int]:
    """Window sizes to try, largest first: about 3/4 of the previous, multiples of `multiple`."""
    smallest = max(multiple, smallest // multiple * multiple)
    out, t = [], largest // multiple * multiple
    while t > smallest:
        out.append(t)
        t = min(t - multiple, int(t * 0.75) // multiple * multiple)
    return out + [smallest]


CallBytes = Callable[[int, Sequence[int], torch.device], "int | None"]


def plan_for(call_bytes: CallBytes, planes: Tensor, multiple: int = 1, *, batch: int, device: torch.device,
             max_memory: int | None = None, tile: int | None = None, overlap: int | None = None) -> Plan:
    """The Plan for padded condition planes [N, C, *spatial] (each axis a multiple of `multiple`) under
    max_memory bytes (None: what the process holds plus 60% of the free RAM / VRAM;
    samplers.memory.default_max_memory). call_bytes(images, window, device): the estimated peak of one network
    call (the denoiser's `call_bytes`); None for a network without an estimate, which runs whole unless
    a tile size is given."""
    from .memory import default_max_memory, used_bytes

    spatial = tuple(planes.shape[2:])
    if call_bytes(1, spatial, device) is None:
        if tile is None:
            return Plan(batch, None, 0, 1, 0)
        window = tuple(min(s, max(multiple, tile // multiple * multiple)) for s in spatial)
        return Plan(batch, window, tile // 4 if overlap is None else overlap, 1, 0)
    limit = default_max_memory(device) if max_memory is None else max_memory
    budget = limit - used_bytes(device)
    if budget <= 0:
        raise FieldError("max_memory", f"{limit / 1e9:.2f} GB", text=f"{{max_memory}} {limit / 1e9:.2f} GB is less than this "
                         f"process already holds ({used_bytes(device) / 1e9:.2f} GB: Python, PyTorch and the model): "
                         "raise {max_memory}")
    return plan_sampling(lambda b, s: call_bytes(b, s, device), spatial, planes.shape[1], batch=batch,
                         budget=budget, multiple=multiple, tile=tile, overlap=overlap, min_tile=32 if len(spatial) == 2 else 16)


def describe(plan: Plan, spatial: Sequence[int]) -> str:
    """One line for the log: the batch and windows chosen, and the estimate."""
    size = "x".join(map(str, spatial))
    how = f"whole {size} images" if plan.tile is None else (
        f"{'x'.join(map(str, plan.tile))} windows of {size} images (overlap {plan.overlap}, {plan.tiles_per_call} per call)")
    return f"{how}, batch {plan.batch}, estimated peak {plan.estimate / 1e9:.2f} GB above the current use"
