"""The models that restore slices in the restore pipeline (restore.files), each a `Restorer`:
its task, ``restore_slices(planes, lowres, name, bar) -> [S, N, 1, H, W]``, a description for the
outputs and, where the model card allows it, the domain check (meddiff.domain):

- a DDPM checkpoint: its sampler (samplers.registry: the checkpoint's stored settings unless the
  request overrides them) through `meddiff.samplers.run.sample_slices`, optionally with data consistency;
- an image-conditional VDM checkpoint: its score network and gamma under the same samplers;
- a learned baseline's checkpoint (pix2pix, SRGAN, ...): its prediction per slice;
- a classical baseline (`Request.method`): median / nlm (denoising), biharmonic (inpainting),
  bicubic / bilinear (super-resolution).

`restore(request, device)` resolves the checkpoint once (`ModelSource`: path, model file, header
metadata), picks the restorer from its format and runs the pipeline. Errors name the request's
fields (FieldError); `meddiff sample` names them as its flags.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, NamedTuple

import torch

from ..baselines.classical import classical_restore
from ..baselines.registry import load_baseline, restore_baseline
from ..checkpointing import BASELINE, VDM, ModelSource
from ..config import TaskConfig
from ..diffusion.checkpoint import load_model
from ..diffusion.denoiser import resolve_precision
from ..errors import FieldError
from ..samplers.run import sample_slices
from ..samplers.consistency import check_request, sr_consistency_error
from ..samplers.registry import SamplingDefaults, SamplingSpec, resolve
from ..checkpointing.weights import use_weights
from ..vdm.checkpoint import LoadedVDM, load_vdm
from ..vdm.sampling import VDMDenoiser
from .files import Request, RestoreSlices, Written, restore_files
from .volume import layout_of, noise_for
from ..checkpointing import resolve_model_file
from ..checkpointing.named import locate
from ..diffusion.denoiser import compile_network
from ..domain import read_card
from ..samplers.memory import parse_size
from ..uncertainty.maps import calibration_for_request

log = logging.getLogger(__name__)

DEFAULT_NOISE = "shared"  # --noise default: same PSNR, lower through-plane error (README "Volumes", benchmarks/volumes.py)
CLASSICAL = {"median": "denoise", "nlm": "denoise", "biharmonic": "inpaint", "bicubic": "sr", "bilinear": "sr"}


class DomainCheck(NamedTuple):
    """What the domain check of a restorer needs (meddiff.domain.card, meddiff.domain.check): the denoiser of the
    model-based score (None: not for this layout), the model card, the SR factor (1 for inpainting) and
    the sampler run ("dpm_solver_pp 10"), which the card's std calibration must match."""

    denoiser: Any
    card: Any
    factor: float
    sampler: str


@dataclasses.dataclass(frozen=True)
class Restorer:
    """A model ready to restore: its task (the checkpoint's, with sr_factor applied), restore_slices
    (planes [N, C, H, W], lowres [N, 1, h, w] | None, name, run Progress) -> [S, N, 1, H, W], the
    description written into every output, its domain check (None: not checked) and the sampler settings
    it runs with (samplers.registry.SamplingSpec; None for baselines), e.g. for the outputs' provenance."""

    task: TaskConfig
    restore_slices: RestoreSlices
    describe: str
    domain_check: DomainCheck | None = None
    sampling: SamplingSpec | None = None
    interval: Any = None  # --interval's calibration (meddiff.uncertainty.maps), or None: not asked / not calibrated


def sr_task(task: TaskConfig, factor: float | None) -> TaskConfig:
    """The task with --sr-factor applied (a warning if the model was not trained for it)."""
    if factor is None:
        return task
    if task.kind != "sr":
        raise FieldError("sr_factor", None, f"applies to super-resolution checkpoints, this one is {task.kind!r}")
    if not factor > 1:
        raise FieldError("sr_factor", factor, "expected a factor > 1")
    trained = task.sr_factors or (task.sr_factor,)
    if not any(abs(factor - f) < 1e-6 * f for f in trained):
        log.warning("sr factor %g: this model was trained for %s only", factor, ", ".join(f"x{f:g}" for f in trained))
    return dataclasses.replace(task, sr_factor=factor)


def _not_for(args: Request, what: str, keys: tuple[str, ...]) -> None:
    for key in keys:
        if getattr(args, key) not in (None, "none"):
            raise FieldError(key, None, f"applies to DDPM checkpoints only, not to {what}")


def sampling_spec(args: Request, defaults: SamplingDefaults) -> SamplingSpec:
    """The request's sampler settings over a checkpoint's stored defaults (samplers.registry.resolve)."""
    return resolve(defaults, sampler=args.sampler, steps=args.steps, eta=args.eta, grid=args.grid,
                   precision=args.precision, samples=args.samples, consistency=args.consistency, resample=args.resample)


def ddpm_restorer(args: Request, device) -> Restorer:
    """The Restorer of a DDPM checkpoint (args.checkpoint: a path or ModelSource): its sampler with the
    checkpoint's stored settings (sampler, steps, eta, grid, precision) unless the request overrides them."""
    cfg, net, denoiser = load_model(args.checkpoint, device=device)
    spec = sampling_spec(args, SamplingDefaults.of_ddpm(cfg))
    # "auto" resolved on this device once (the one precision rule), so the outputs' provenance says what ran
    spec = dataclasses.replace(spec, precision=resolve_precision(spec.precision, torch.device(device)))
    denoiser = dataclasses.replace(denoiser, precision=spec.precision)
    use_weights(net, args.checkpoint, cfg, args.weights)
    if args.compile:
        denoiser = dataclasses.replace(denoiser, net=compile_network(denoiser.net))
    layout = layout_of(cfg)  # 2D, 2.5D (neighbours added per slice), 3D or thick-slice (restore.volume)
    task = sr_task(dataclasses.replace(cfg.task, context_slices=0), args.sr_factor)
    if layout.thick and task.sr_factor != layout.thick:
        raise FieldError("sr_factor", args.sr_factor, f"this thick-slice model restores slices {layout.thick}x thinner only")
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
    domain = None
    if task.kind in ("sr", "inpaint") and layout.slicewise:  # the domain check of meddiff.domain (restore.files runs it)

        # 2.5D: modality, spacing and intensities are checked; the model-based score takes one plane, so not for it
        # (nor for inpainting: it scores super-resolution); inpainting cards give factor 1 and the std calibration
        sr = task.kind == "sr"
        domain = DomainCheck(None if layout.context or not sr else denoiser, read_card(resolve_model_file(args.checkpoint)),
                             task.sr_factor if sr else 1.0, f"{sampler} {steps}")
    interval = None
    if args.interval is not None:  # --interval P: the model's calibration for this sampler (meddiff.uncertainty)

        interval = calibration_for_request(resolve_model_file(args.checkpoint), f"{sampler} {steps}", args.samples,
                                           args.interval)
    return Restorer(task, run_sampler, describe, domain, spec, interval)


def memory_options(args: Request) -> dict:
    """restore()'s max_memory / tile_size / tile_overlap from the request."""
    try:
        limit = None if args.max_memory is None else parse_size(args.max_memory)
    except ValueError as e:
        raise FieldError("max_memory", args.max_memory, text=f"{{max_memory}}: {e}") from None
    for key in ("tile_size", "tile_overlap"):
        value = getattr(args, key)
        if value is not None and value < (1 if key == "tile_size" else 0):
            raise FieldError(key, value, f"expected a {'positive' if key == 'tile_size' else 'non-negative'} number of pixels")
    if args.tile_size is not None and args.tile_overlap is not None and args.tile_overlap > args.tile_size // 2:
        raise FieldError("tile_overlap", args.tile_overlap, f"expected at most half of {{tile_size}} {args.tile_size}")
    return {"max_memory": limit, "tile_size": args.tile_size, "tile_overlap": args.tile_overlap}


def baseline_restorer(args: Request, device) -> Restorer:
    """The Restorer of a learned baseline's checkpoint: its prediction per slice."""
    _not_for(args, "learned baselines", ("sampler", "steps", "eta", "grid", "precision", "consistency", "noise"))
    cfg, model = load_baseline(args.checkpoint, device=device)
    use_weights(model, args.checkpoint, cfg, args.weights)

    def predict(planes: torch.Tensor, lowres: torch.Tensor | None, name: Path, bar=None) -> torch.Tensor:
        return restore_baseline(model, planes, samples=args.samples, seed=args.seed, batch_size=args.batch_size, device=device)

    return Restorer(sr_task(cfg.task, args.sr_factor), predict, f"{cfg.baseline.name} baseline, seed {args.seed}")


def classical_restorer(args: Request) -> Restorer:
    """The Restorer of a classical baseline (Request.method): deterministic, one sample."""
    _not_for(args, f"method {args.method}", ("sampler", "steps", "eta", "grid", "precision", "consistency", "noise"))
    memory_options(args)  # unused here, but a malformed --max-memory / --tile-* is refused all the same
    if args.samples != 1:
        raise FieldError("samples", args.samples, f"{{method}} {args.method} is deterministic, expected 1")
    kind = CLASSICAL[args.method]
    if args.sr_factor is not None and kind != "sr":
        raise FieldError("sr_factor", None, f"applies to {{method}} bicubic or bilinear, not {args.method}")
    if args.sr_factor is not None and not args.sr_factor > 1:
        raise FieldError("sr_factor", args.sr_factor, "expected a factor > 1")
    task = TaskConfig(kind=kind, sr_factor=args.sr_factor or 4.0,
                      sr_upsample=args.method if kind == "sr" else "bicubic")

    def apply(planes: torch.Tensor, lowres: torch.Tensor | None, name: Path, bar=None) -> torch.Tensor:
        if kind == "sr":  # the shared path already upsampled the input with this method
            return planes[None, :, :1].clamp(-1, 1)
        return classical_restore(args.method, planes, planes[:, 1:] if kind == "inpaint" else torch.ones_like(planes))

    return Restorer(task, apply, args.method)


def vdm_restorer(args: Request, vdm: LoadedVDM, device) -> Restorer:
    """The Restorer of an image-conditional VDM:
    its score network and gamma read as a discrete schedule of T = vdm.timesteps (1000 for a
    continuous-time model) under meddiff's samplers (VDMDenoiser.from_gamma), so `--sampler
    ancestral|ddim|dpm_solver_pp --steps S` work as for a DDPM. The output is z_0, the image in
    [-1, 1] up to the half-level offset of the level encoder (no decoder sampling)."""
    cfg = vdm.cfg
    if args.consistency != "none":
        raise FieldError("consistency", args.consistency, "not available for VDM checkpoints (use none)")
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

    return Restorer(task, run_sampler, f"VDM {sampler} {steps} steps of T = {timesteps}, seed {args.seed}, step {vdm.step}",
                    sampling=spec)


def validate_request(args: Request) -> None:
    """The request's own consistency (before any file is read): a checkpoint or a method, an input,
    positive samples and batch size, a seed numpy can use."""
    if args.method is not None and args.checkpoint is not None:
        raise FieldError("method", args.method, text=f"give {{checkpoint}} or {{method}}, not both (got {{method}} {args.method})")
    if args.method is None and args.checkpoint is None:
        raise FieldError("checkpoint", text=f"give {{checkpoint}} (a trained model) or {{method}} (one of {', '.join(sorted(CLASSICAL))})")
    if args.input is None:
        raise FieldError("input", None, "is required to restore images")
    if args.samples < 1:
        raise FieldError("samples", args.samples, "expected >= 1")
    if args.batch_size < 1:
        raise FieldError("batch_size", args.batch_size, "expected >= 1")
    if not 0 <= args.seed < 2**63:
        raise FieldError("seed", args.seed, "expected an integer from 0 to 2**63 - 1")


def located(args: Request) -> Request:
    """The request with its checkpoint resolved once into a ModelSource (a shipped model's name, a model
    file, a checkpoint or run folder -> path, model file, header metadata; meddiff.checkpointing.named.locate)."""
    if args.checkpoint is None or isinstance(args.checkpoint, ModelSource):
        return args

    return dataclasses.replace(args, checkpoint=locate(args.checkpoint))


def restorer_for(args: Request, device) -> Restorer:
    """The Restorer of a request whose checkpoint is located (a ModelSource) or which names a method:
    DDPM, image-conditional VDM or learned baseline, told apart by the checkpoint's format."""
    if args.method is not None:
        return classical_restorer(args)
    fmt = args.checkpoint.format if isinstance(args.checkpoint, ModelSource) else None
    if fmt == BASELINE.name:
        return baseline_restorer(args, device)
    if fmt == VDM.name:
        return vdm_restorer_of(args, device)
    return ddpm_restorer(args, device)


def restore(args: Request, device: torch.device | str = "cpu") -> Written:
    """Restore the inputs of `args` with its checkpoint (DDPM, image-conditional VDM or learned baseline,
    told apart by the checkpoint's format) or classical method; returns the files written (a list,
    with `.summary`: slices, network calls, seconds, peak memory)."""
    validate_request(args)
    args = located(args)
    return restore_files(args, restorer_for(args, device))


def vdm_restorer_of(args: Request, device) -> Restorer:
    """vdm_restorer of the checkpoint, refusing a VDM trained without an image condition."""
    vdm = load_vdm(args.checkpoint, device=device)
    use_weights(vdm.model, args.checkpoint, vdm.cfg, args.weights)
    if not vdm.cfg.vdm.image_condition:
        raise FieldError("checkpoint", vdm.file, "a VDM trained without an image condition, which generates images "
                         "({num} N [{label} L]) and cannot restore {input}; restoring needs one trained with "
                         "vdm.image_condition: true")
    return vdm_restorer(args, vdm, device)
