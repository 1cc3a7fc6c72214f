"""The models that restore slices in the restore pipeline (restore.files), each as
``(task, restore_slices(planes, lowres, name) -> [S, N, 1, H, W], description)``:

- a DDPM checkpoint: its sampler (ancestral, DDIM, DPM-Solver++) through `meddiff.inference.restore`,
  optionally with data consistency (project / RePaint);
- an image-conditional VDM checkpoint: its score network and gamma under the same samplers;
- a learned baseline's checkpoint (pix2pix, SRGAN, ...): its prediction per slice;
- a classical baseline (`Request.method`): median / nlm (denoising), biharmonic (inpainting),
  bicubic / bilinear (super-resolution).

`restore(request, device)` picks the model from the checkpoint's format and runs the pipeline.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch

from ..baselines.classical import classical_restore
from ..baselines.registry import load_baseline, restore_baseline
from ..checkpointing import BASELINE, VDM, format_of
from ..config import TaskConfig
from ..diffusion.checkpoint import load_model
from ..errors import FieldError, InputError
from ..inference import sample_slices
from ..samplers.consistency import check_request, sr_consistency_error
from ..samplers.registry import SamplingDefaults, SamplingSpec, resolve
from ..train.weights import use_weights
from ..vdm.checkpoint import LoadedVDM, load_vdm
from ..vdm.sampling import VDMDenoiser
from .files import Request, Written, restore_files
from .volume import layout_of, noise_for

log = logging.getLogger(__name__)

DEFAULT_NOISE = "shared"  # --noise default: same PSNR, lower through-plane error (README "Volumes", benchmarks/volumes.py)
CLASSICAL = {"median": "denoise", "nlm": "denoise", "biharmonic": "inpaint", "bicubic": "sr", "bilinear": "sr"}


def sr_task(task: TaskConfig, factor: float | None) -> TaskConfig:
    """The task with --sr-factor applied (a warning if the model was not trained for it)."""
    if factor is None:
        return task
    if task.kind != "sr":
        raise InputError(f"--sr-factor applies to super-resolution checkpoints, this one is {task.kind!r}")
    if not factor > 1:
        raise InputError(f"--sr-factor {factor}: expected a factor > 1")
    trained = task.sr_factors or (task.sr_factor,)
    if not any(abs(factor - f) < 1e-6 * f for f in trained):
        log.warning("--sr-factor %g: this model was trained for %s only", factor, ", ".join(f"x{f:g}" for f in trained))
    return dataclasses.replace(task, sr_factor=factor)


def _not_for(args: Request, what: str, keys: tuple[str, ...]) -> None:
    for key in keys:
        if getattr(args, key) not in (None, "none"):
            raise InputError(f"--{key.replace('_', '-')} applies to DDPM checkpoints only, not to {what}")


def sampling_spec(args: Request, defaults: SamplingDefaults) -> SamplingSpec:
    """The request's sampler settings over a checkpoint's stored defaults (samplers.registry.resolve)."""
    return resolve(defaults, sampler=args.sampler, steps=args.steps, eta=args.eta, grid=args.grid,
                   precision=args.precision, samples=args.samples, consistency=args.consistency, resample=args.resample)


def ddpm_restorer(args: Request, device):
    """(task, restore(planes, lowres, name) -> [S, N, 1, H, W], description) of a DDPM checkpoint: its sampler
    with the checkpoint's stored settings (sampler, steps, eta, grid, precision) unless the request overrides them."""
    cfg, net, denoiser = load_model(args.checkpoint, device=device)
    spec = sampling_spec(args, SamplingDefaults.of_ddpm(cfg))
    denoiser = dataclasses.replace(denoiser, precision=spec.precision)
    use_weights(net, args.checkpoint, cfg, args.weights)
    if args.compile:
        from ..diffusion.denoiser import compile_network

        denoiser = dataclasses.replace(denoiser, net=compile_network(denoiser.net))
    layout = layout_of(cfg)  # 2D, 2.5D (neighbours added per slice), 3D or thick-slice (restore.volume)
    task = sr_task(dataclasses.replace(cfg.task, context_slices=0), args.sr_factor)
    if layout.thick and task.sr_factor != layout.thick:
        raise InputError(f"--sr-factor {args.sr_factor}: this thick-slice model restores slices {layout.thick}x thinner only")
    noise = noise_for(layout, args.noise or DEFAULT_NOISE)
    check_request(task.kind, args.consistency, args.resample)
    sampler, steps = spec.name, spec.steps

    memory = memory_options(args)

    def run_sampler(planes: torch.Tensor, lowres: torch.Tensor | None, name: Path, bar=None) -> torch.Tensor:
        measured = layout.measurement(task.kind, args.consistency, planes, lowres, resample=args.resample,
                                      factor=task.sr_factor if task.kind == "sr" else None)
        out = sample_slices(denoiser, layout.to_net(planes), spec, seed=args.seed, batch_size=args.batch_size,
                            device=device, progress=args.progress if bar is None else bar, consistency=measured,
                            noise=noise, **memory)
        if measured is not None and measured.lowres is not None and not layout.thick:
            err = max(float(sr_consistency_error(o, measured.lowres).max()) for o in out)
            log.info("%s: largest RMS |A x - y| over slices and samples %.2e ([-1, 1] units)", name, err)
        return layout.from_net(out)

    describe = f"{sampler} {steps} steps, seed {args.seed}, {noise} noise" + ("" if args.consistency == "none" else f", consistency {args.consistency}")
    if task.kind in ("sr", "inpaint") and layout.slicewise:  # the domain check of meddiff.domain (restore.files runs it)
        from ..checkpointing import resolve_model_file
        from ..domain import read_card

        # 2.5D: modality, spacing and intensities are checked; the model-based score takes one plane, so not for it
        # (nor for inpainting: it scores super-resolution); inpainting cards give factor 1 and the std calibration
        sr = task.kind == "sr"
        run_sampler.domain = (None if layout.context or not sr else denoiser, read_card(resolve_model_file(args.checkpoint)),  # type: ignore[attr-defined]
                              task.sr_factor if sr else 1.0, f"{sampler} {steps}")
    return task, run_sampler, describe


def memory_options(args: Request) -> dict:
    """restore()'s max_memory / tile_size / tile_overlap from the request."""
    from ..memory import parse_size

    try:
        limit = None if args.max_memory is None else parse_size(args.max_memory)
    except ValueError as e:
        raise InputError(f"--max-memory: {e}") from None
    for key in ("tile_size", "tile_overlap"):
        value = getattr(args, key)
        if value is not None and value < (1 if key == "tile_size" else 0):
            raise InputError(f"--{key.replace('_', '-')} {value}: expected a {'positive' if key == 'tile_size' else 'non-negative'} number of pixels")
    return {"max_memory": limit, "tile_size": args.tile_size, "tile_overlap": args.tile_overlap}


def baseline_restorer(args: Request, device):
    """(task, restore, description) of a learned baseline's checkpoint: its prediction per slice."""
    _not_for(args, "learned baselines", ("sampler", "steps", "eta", "grid", "precision", "consistency", "noise"))
    cfg, model = load_baseline(args.checkpoint, device=device)
    use_weights(model, args.checkpoint, cfg, args.weights)

    def predict(planes: torch.Tensor, lowres: torch.Tensor | None, name: Path, bar=None) -> torch.Tensor:
        return restore_baseline(model, planes, samples=args.samples, seed=args.seed, batch_size=args.batch_size, device=device)

    return sr_task(cfg.task, args.sr_factor), predict, f"{cfg.baseline.name} baseline, seed {args.seed}"


def classical_restorer(args: Request):
    """(task, restore, description) of a classical baseline (--method): deterministic, one sample."""
    _not_for(args, f"--method {args.method}", ("sampler", "steps", "eta", "grid", "precision", "consistency", "noise"))
    if args.samples != 1:
        raise InputError(f"--samples {args.samples}: --method {args.method} is deterministic, expected 1")
    kind = CLASSICAL[args.method]
    if args.sr_factor is not None and kind != "sr":
        raise InputError(f"--sr-factor applies to --method bicubic or bilinear, not {args.method}")
    if args.sr_factor is not None and not args.sr_factor > 1:
        raise InputError(f"--sr-factor {args.sr_factor}: expected a factor > 1")
    task = TaskConfig(kind=kind, sr_factor=args.sr_factor or 4.0,
                      sr_upsample=args.method if kind == "sr" else "bicubic")

    def apply(planes: torch.Tensor, lowres: torch.Tensor | None, name: Path, bar=None) -> torch.Tensor:
        if kind == "sr":  # the shared path already upsampled the input with this method
            return planes[None, :, :1].clamp(-1, 1)
        return classical_restore(args.method, planes, planes[:, 1:] if kind == "inpaint" else torch.ones_like(planes))

    return task, apply, args.method


def vdm_restorer(args: Request, vdm: LoadedVDM, device):
    """(task, restore(planes, lowres, name) -> [S, N, 1, H, W], description) of an image-conditional VDM:
    its score network and gamma read as a discrete schedule of T = vdm.timesteps (1000 for a
    continuous-time model) under meddiff's samplers (VDMDenoiser.from_gamma), so `--sampler
    ancestral|ddim|dpm_solver_pp --steps S` work as for a DDPM. The output is z_0, the image in
    [-1, 1] up to the half-level offset of the level encoder (no decoder sampling)."""
    cfg = vdm.cfg
    if args.consistency != "none":
        raise InputError(f"--consistency {args.consistency}: not available for VDM checkpoints (use none)")
    if args.precision not in (None, "fp32"):
        raise FieldError("precision", args.precision, "a VDM checkpoint samples in fp32 (give fp32 or leave it out)")
    if args.compile:
        raise FieldError("compile", None, "applies to DDPM checkpoints only, not to VDM checkpoints")
    spec = sampling_spec(args, vdm.restore_defaults())
    sampler, steps, timesteps = spec.name, spec.steps, vdm.timesteps
    denoiser = vdm.denoiser()
    task = sr_task(cfg.task, args.sr_factor)
    noise = args.noise or "independent"  # a VDM restores each slice with its own noise unless asked
    memory = memory_options(args)

    def run_sampler(planes: torch.Tensor, lowres, name: Path, bar=None) -> torch.Tensor:
        return sample_slices(denoiser, planes, spec, seed=args.seed, batch_size=args.batch_size, device=device,
                             progress=args.progress if bar is None else bar, noise=noise, **memory)

    return task, run_sampler, f"VDM {sampler} {steps} steps of T = {timesteps}, seed {args.seed}, step {vdm.step}"


def restore(args: Request, device: torch.device | str = "cpu") -> Written:
    """Restore the inputs of `args` with its checkpoint (DDPM, image-conditional VDM or learned baseline,
    told apart by the checkpoint's format) or classical method; returns the files written (a list,
    with `.summary`: slices, network calls, seconds, peak memory)."""
    if args.method is not None and args.checkpoint is not None:
        raise InputError(f"give --checkpoint or --method, not both (got --method {args.method})")
    if args.method is None and args.checkpoint is None:
        raise InputError(f"give --checkpoint (a trained model) or --method (one of {', '.join(sorted(CLASSICAL))})")
    if args.input is None:
        raise InputError("--input is required to restore images")
    if args.samples < 1:
        raise InputError(f"--samples {args.samples}: expected >= 1")
    if args.batch_size < 1:
        raise InputError(f"--batch-size {args.batch_size}: expected >= 1")
    if not 0 <= args.seed < 2**63:
        raise InputError(f"--seed {args.seed}: expected an integer from 0 to 2**63 - 1")
    fmt = format_of(args.checkpoint) if args.checkpoint is not None else None
    if args.method is not None:
        task, restore_slices, describe = classical_restorer(args)
    elif fmt == BASELINE.name:
        task, restore_slices, describe = baseline_restorer(args, device)
    elif fmt == VDM.name:
        task, restore_slices, describe = vdm_restorer_of(args, device)
    else:
        task, restore_slices, describe = ddpm_restorer(args, device)
    return restore_files(args, task, restore_slices, describe)


def vdm_restorer_of(args: Request, device):
    """vdm_restorer of the checkpoint, refusing a VDM trained without an image condition."""
    vdm = load_vdm(args.checkpoint, device=device)
    use_weights(vdm.model, args.checkpoint, vdm.cfg, args.weights)
    if not vdm.cfg.vdm.image_condition:
        raise InputError(f"--input: {vdm.file} is a VDM trained without an image condition, which generates "
                         "images (--num N [--label L]); restoring needs one trained with vdm.image_condition: true")
    return vdm_restorer(args, vdm, device)
