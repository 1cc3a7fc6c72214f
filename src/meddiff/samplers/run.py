"""Apply a trained restoration model to slices: padding, batching, per-image seeds, repeated samples.

Shapes: condition planes ``[N, C_cond, H, W]`` in [-1, 1] (any H, W: they are padded to the
network's size multiple and cropped back); results ``[S, N, 1, H, W]`` for S samples per slice.

Seeds: sample s of slice n draws from a generator seeded by numpy's SeedSequence of
(seed, n, s), so a slice's result depends only on (seed, its index, s), never on the batch
size or the device batch it ran in, and different (seed, n, s) give unrelated noise (a plain
``seed + n`` would make seed 1 reuse seed 0's noise one slice later). With ``noise="shared"``
every slice of the call uses slice 0's seed (samplers.noise): one noise for the volume.
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from ..diffusion.denoiser import Denoiser
from ..errors import InputError
from .progress import CountingDenoiser, Progress, calls_per_slice
from .tiling import TiledDenoiser, describe, plan_for
from .consistency import Measurement
from .noise import check_noise, generators_for, seed_index
from .registry import SamplingDefaults, SamplingSpec, entry, resolve, sampler_options  # noqa: F401 (sampler_options: the old import path)

log = logging.getLogger(__name__)


def image_seed(seed: int, index: int, sample: int) -> int:
    """The 63-bit seed of sample `sample` of slice `index` under the user's `seed`."""
    return int(np.random.SeedSequence([int(seed), int(index), int(sample)]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def pad_spatial(x: Tensor, multiple: int, value: float = -1.0) -> tuple[Tensor, tuple[int, ...]]:
    """Pad every spatial axis of [N, C, *spatial] (2D or 3D) at its end with `value` to multiples of
    `multiple`; returns (padded, original spatial size)."""
    size = tuple(x.shape[2:])
    pad: list[int] = []
    for s in reversed(size):  # F.pad lists the last axis first
        pad += [0, (-s) % multiple]
    return (F.pad(x, pad, value=value) if any(pad) else x), size


def pad_planes(cond: Tensor, multiple: int) -> tuple[Tensor, tuple[int, ...]]:
    """Condition planes [N, C, H, W] (or volumes [N, C, D, H, W]) padded to multiples of `multiple`:
    the image plane with the background -1, any mask plane with 0 ("known"); returns (padded,
    original spatial size)."""
    image, size = pad_spatial(cond[:, :1], multiple, -1.0)
    return torch.cat([image, pad_spatial(cond[:, 1:], multiple, 0.0)[0]], dim=1), size


@torch.no_grad()
def sample_slices(
    denoiser: Denoiser,
    cond: Tensor,
    spec: SamplingSpec,
    *,
    seed: int = 0,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    progress: bool | Progress = True,
    consistency: Measurement | None = None,
    max_memory: int | None = None,
    tile_size: int | None = None,
    tile_overlap: int | None = None,
    noise: str = "independent",
    **extra_options,
) -> Tensor:
    """Sample `spec.samples` restorations of each of the N slices in `cond` [N, C_cond, H, W] -> [S, N, 1, H, W]
    (CPU, float32) with the sampler of `spec` (samplers.registry.resolve); a 3D network takes volumes:
    cond [N, C_cond, D, H, W] -> [S, N, 1, D, H, W] (tiled in 3D windows when needed).

    consistency: None, or the measurement the samples must agree with (samplers.consistency.measurement_for;
    its mode must be spec.consistency, which resolve checked against the sampler).
    progress: a bar of its own (True), none (False), or a run-wide Progress to advance.
    max_memory (bytes; None = a share of the free memory), tile_size, tile_overlap: the batch is
    lowered, or the denoiser tiled, to keep the estimated peak under max_memory (meddiff.samplers.tiling).
    noise: "independent" (each slice its own seed) or "shared" (the slices of `cond` are one volume:
    the same noise for every slice, per sample; samplers.noise).
    extra_options: sampler options a spec does not hold (e.g. DPM-Solver++'s `order`), passed on as given.
    """
    check_noise(noise)
    _check_condition(cond, spec, consistency)
    device = torch.device(device)
    times = spec.time_grid(denoiser)
    bar = progress if isinstance(progress, Progress) else Progress(bool(progress), desc=spec.describe())
    m = denoiser.size_multiple
    plan = _memory_plan(denoiser, cond, batch_size, device, max_memory, tile_size, tile_overlap)
    net = (CountingDenoiser(denoiser, bar.advance) if plan.tile is None else
           TiledDenoiser(denoiser, plan.tile, plan.overlap, plan.batch * plan.tiles_per_call, bar.advance))
    repaint = consistency.resample if consistency is not None and consistency.mode == "repaint" else 1
    bar.expect(spec.samples * cond.shape[0] * calls_per_slice(len(times.k), repaint))
    options = {**spec.options(), **extra_options}

    def sample(c: Tensor, gens: list[torch.Generator], i: int) -> Tensor:
        extra = {} if consistency is None else {"consistency": consistency.for_batch(i, c)}
        return spec.function(net, c, times, generators=gens, **extra, **options)

    out = restore_batches(sample, cond, m, samples=spec.samples, seed=seed, batch_size=plan.batch,
                          device=device, progress=False, desc=spec.describe(), noise=noise)
    bar.slices_done(cond.shape[0])
    if not isinstance(progress, Progress):
        bar.close()
    return out


def _check_condition(cond: Tensor, spec: SamplingSpec, consistency: Measurement | None) -> None:
    """The condition planes must be finite, and a measurement must be of the spec's consistency mode and
    fit `cond` (its image size, one low-resolution image per slice)."""
    if not torch.isfinite(cond).all():
        raise ValueError("condition contains NaN or infinite values")
    if consistency is None:
        return
    if consistency.mode != spec.consistency:
        raise ValueError(f"a {consistency.mode!r} measurement for a spec resolved with consistency {spec.consistency!r}")
    if consistency.size is not None and tuple(consistency.size) != tuple(cond.shape[2:]):
        raise InputError(f"measurement for images of size {tuple(consistency.size)}, but the condition is {tuple(cond.shape[2:])}")
    if consistency.lowres is not None and consistency.lowres.shape[0] != cond.shape[0]:
        raise InputError(f"{consistency.lowres.shape[0]} low-resolution images for {cond.shape[0]} slices")


def _memory_plan(denoiser: Denoiser, cond: Tensor, batch_size: int, device: torch.device, max_memory: int | None,
                 tile_size: int | None, tile_overlap: int | None):
    """The batch / tiling plan (meddiff.samplers.tiling.plan_for) for `cond` padded to the denoiser's size multiple
    (the plan needs the padded shape only: restore_batches pads the data); logged when it lowers the batch
    or tiles."""
    m = denoiser.size_multiple
    padded = torch.empty(*cond.shape[:2], *(-(-s // m) * m for s in cond.shape[2:]), device="meta")
    plan = plan_for(denoiser.call_bytes, padded, m, batch=batch_size, device=device, max_memory=max_memory,
                    tile=tile_size, overlap=tile_overlap)
    if plan.tile is not None or plan.batch < min(batch_size, cond.shape[0]):
        log.info("%s", describe(plan, padded.shape[2:]))
    return plan


def restore(denoiser: Denoiser, cond: Tensor, *, sampler: str = "ancestral", steps: int = 50, samples: int = 1,
            consistency: Measurement | None = None, **kwargs) -> Tensor:
    """Deprecated spelling of sample_slices with the sampler given by hand (sampler, steps and its options
    variance / eta / grid as sampler_options returns them, any other option of the sampler, and the rest
    as sample_slices takes them).

    It does not read a checkpoint's stored sampler defaults: to restore as `meddiff sample` does, use
    ``meddiff.load_pretrained(name).restore(images)`` (meddiff.pipeline)."""
    own = entry(sampler).options + ("grid",)  # the time grid is any sampler's; others go to the sampler as given
    opts = {key: kwargs.pop(key) for key in ("variance", "eta", "grid") if key in kwargs and key in own}
    defaults = SamplingDefaults(sampler, steps, float(opts.get("eta", 0.0)), str(opts.get("grid", "uniform")),
                                variance=str(opts.get("variance", "beta")), timesteps=max(int(steps), 1))
    spec = resolve(defaults, samples=samples, consistency=None if consistency is None else consistency.mode,
                   resample=None if consistency is None else consistency.resample)
    return sample_slices(denoiser, cond, spec, consistency=consistency, **kwargs)


@torch.no_grad()
def restore_batches(fn: Callable[[Tensor, list[torch.Generator], int], Tensor], cond: Tensor, multiple: int, *,
                    samples: int = 1, seed: int = 0, batch_size: int = 8, device: torch.device | str = "cpu",
                    progress: bool = False, desc: str = "restore", noise: str = "independent") -> Tensor:
    """The batch loop of every restorer: cond [N, C, H, W] (or volumes [N, C, D, H, W]) padded to
    `multiple` (pad_planes), cut in batches of `batch_size` slices moved to `device`, fn(batch,
    generators, first index) -> [b, 1, *padded spatial] called with one generator per slice seeded
    image_seed(seed, index, sample), cropped back; returns [S, N, 1, *spatial] on the CPU, float32."""
    device = torch.device(device)
    padded, size = pad_planes(cond, multiple)
    crop = (..., *(slice(0, s) for s in size))
    n = cond.shape[0]
    out = torch.empty(samples, n, 1, *size)
    jobs = [(s, i) for s in range(samples) for i in range(0, n, batch_size)]
    bar = tqdm(jobs, desc=desc, disable=not progress, unit="batch")
    for s, i in bar:
        c = padded[i : i + batch_size].to(device)
        gens = generators_for([image_seed(seed, seed_index(noise, j), s) for j in range(i, i + c.shape[0])])
        x = fn(c, gens, i)
        out[s, i : i + c.shape[0]] = x[crop].float().cpu()
    return out


def summarise(samples: Tensor) -> tuple[Tensor, Tensor]:
    """Per-pixel mean and standard deviation over the sample axis: [S, ...] -> ([...], [...]).

    The std uses the unbiased estimator (S - 1) and is zero for a single sample.
    """
    mean = samples.mean(0)
    std = samples.std(0, unbiased=True) if samples.shape[0] > 1 else torch.zeros_like(mean)
    return mean, std

