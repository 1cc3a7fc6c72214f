"""`meddiff sample --checkpoint VDM_CKPT --output DIR [--num N] [--label L] [--steps S]`: generation
from a variational diffusion model (meddiff.vdm), called by `meddiff sample` when the checkpoint
has format "meddiff-vdm-v1". With --input, a VDM trained with vdm.image_condition restores the
input through `meddiff sample`'s shared reading/writing path (vdm_restorer).

Writes DIR/grid.png (all samples tiled, row-major, enlarged without interpolation to >= 512 px wide) and one file per sample,
DIR/sample_0000[_<class>].<png|nii.gz|dcm> (--format same = png). Intensities are the model's
levels 0..V-1 (PNG: 8 bit when V <= 256, window 0..V-1). Every file carries meddiff's synthetic
marker (DICOM DerivationDescription/ImageComments, NIfTI descrip, PNG text). Sample i uses the
seed --seed + i, so it does not depend on --num or --batch-size. Class-conditional models:
--label is a class name or index; without it sample i gets class i mod n_classes.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..io import Volume, write_volume

log = logging.getLogger(__name__)

_EXT = {"same": ".png", "png": ".png", "nifti": ".nii.gz", "dicom": ".dcm"}


def is_vdm_checkpoint(path: str | Path) -> bool:
    """True if the checkpoint's model file has the VDM format (reads only the safetensors header)."""
    from ..train.checkpoint import VDM_FORMAT, resolve_model_file

    try:
        file = resolve_model_file(path)
        from safetensors import safe_open

        with safe_open(str(file), framework="pt", device="cpu") as f:
            return (f.metadata() or {}).get("format") == VDM_FORMAT
    except Exception:  # unreadable files: let the DDPM loader report them as it always has
        return False


def resolve_labels(label: str | None, names: tuple[str, ...], n: int) -> tuple[torch.Tensor | None, list[str]]:
    """(class indices [n] or None, class name per sample ('' when unconditional))."""
    if not names:
        if label is not None:
            raise InputError(f"--label {label!r}: this VDM is unconditional (trained without class labels)")
        return None, [""] * n
    if label is None:
        idx = [i % len(names) for i in range(n)]
    elif label in names:
        idx = [names.index(label)] * n
    elif label.isdigit() and int(label) < len(names):
        idx = [int(label)] * n
    else:
        raise InputError(f"--label {label!r}: expected one of the model's classes {list(names)} or an index 0..{len(names) - 1}")
    return torch.tensor(idx, dtype=torch.long), [names[i] for i in idx]


def run(args: argparse.Namespace) -> int:
    from ..train.distributed import pick_device
    from ..vdm.build import latent_shape
    from ..vdm.checkpoint import load_vdm
    from ..vdm.generate import generate_levels, grid_for_viewing

    device = pick_device(args.device)
    vdm = load_vdm(args.checkpoint, device=device)
    cfg = vdm.cfg
    from ..train.weights import use_weights
    weights = use_weights(vdm.model, args.checkpoint, cfg, getattr(args, "weights", "ema"))
    if args.input is not None:
        if not cfg.vdm.image_condition:
            raise InputError(f"--input: {vdm.file} is a VDM trained without an image condition, which generates "
                             "images (--num N [--label L]); restoring needs one trained with vdm.image_condition: true")
        from .sample import restore_files

        task, restore_slices, describe = vdm_restorer(args, vdm, device)
        return restore_files(args, task, restore_slices, describe)
    if cfg.vdm.image_condition:
        raise InputError(f"{vdm.file}: an image-conditional VDM (restoration) cannot generate without an input")
    steps = args.steps if args.steps is not None else cfg.vdm.sample_steps
    if steps < 1:
        raise InputError(f"--steps {steps}: expected an integer >= 1 (any number of ancestral steps)")
    n = args.num
    if n < 1:
        raise InputError(f"--num {n}: expected >= 1")
    if args.batch_size < 1:
        raise InputError(f"--batch-size {args.batch_size}: expected >= 1")
    labels, names = resolve_labels(args.label, vdm.class_names, n)
    lat = latent_shape(cfg, vdm.data_shape)
    chunks = []
    for s in range(0, n, args.batch_size):
        e = min(n, s + args.batch_size)
        chunks.append(generate_levels(vdm.model, lat, e - s, steps=steps, seed=args.seed + s,
                                      labels=None if labels is None else labels[s:e], device=device).cpu())
        log.info("generated %d/%d", e, n)
    x = torch.cat(chunks)[:, 0].numpy().astype(np.float32)  # [n, H, W] levels (one channel)
    v = cfg.vdm.vocab_size
    bits = 8 if v <= 256 else 16
    out: Path = args.output
    out.mkdir(parents=True, exist_ok=True)
    what = f"VDM sample, {steps} ancestral steps, seed {args.seed}, step {vdm.step}, {weights}"
    written = write_volume(_volume(grid_for_viewing(x, fill=0.0), vdm.file, what), out / "grid.png", synthetic=True,
                           description=f"meddiff {what} (grid)", bits=bits, window=(0.0, v - 1.0))
    ext = _EXT[args.format]
    for i in range(n):
        name = f"sample_{i:04d}" + (f"_{names[i]}" if names[i] else "")
        desc = f"meddiff {what}" + (f", class {names[i]}" if names[i] else "")
        written += write_volume(_volume(x[i], vdm.file, desc), out / f"{name}{ext}", synthetic=True, description=desc,
                                bits=bits, window=(0.0, v - 1.0) if ext == ".png" else None, overwrite=True)
    print(f"wrote {len(written)} file(s) under {out} (grid.png and {n} sample(s), {steps} steps)")
    return 0


def vdm_restorer(args: argparse.Namespace, vdm, device):
    """(task, restore(planes, lowres, name) -> [S, N, 1, H, W], description) of an image-conditional VDM:
    its score network and gamma read as a discrete schedule of T = vdm.timesteps (1000 for a
    continuous-time model) under meddiff's samplers (VDMDenoiser.from_gamma), so `--sampler
    ancestral|ddim|dpm_solver_pp --steps S` work as for a DDPM. The output is z_0, the image in
    [-1, 1] up to the half-level offset of the level encoder (no decoder sampling)."""
    from ..inference import SAMPLERS, restore, sampler_options
    from ..vdm.sampling import VDMDenoiser
    from .sample import sr_task

    cfg = vdm.cfg
    if args.consistency != "none":
        raise InputError(f"--consistency {args.consistency}: not available for VDM checkpoints (use none)")
    sampler = args.sampler or "ancestral"
    if sampler not in SAMPLERS:
        raise InputError(f"--sampler {sampler}: expected one of {sorted(SAMPLERS)}")
    timesteps = cfg.vdm.timesteps or 1000
    steps = args.steps if args.steps is not None else min(cfg.vdm.sample_steps, timesteps)
    if not 1 <= steps <= timesteps:
        raise InputError(f"--steps {steps}: expected 1..{timesteps} (the VDM's grid, vdm.timesteps or 1000)")
    eta = 0.0 if args.eta is None else args.eta
    if args.eta is not None and sampler != "ddim":
        raise InputError(f"--eta applies to --sampler ddim only, not {sampler}")
    options = sampler_options(sampler, "beta_tilde", eta, args.grid or "auto")
    score = vdm.model.score
    denoiser = VDMDenoiser.from_gamma(score, vdm.model.gamma, timesteps)
    denoiser.net = getattr(score, "unet", score)
    task = sr_task(cfg.task, args.sr_factor)

    def run_sampler(planes: torch.Tensor, lowres, name: Path) -> torch.Tensor:
        return restore(denoiser, planes, sampler=sampler, steps=steps, samples=args.samples, seed=args.seed,
                       batch_size=args.batch_size, device=device, progress=not args.no_progress, **options)

    return task, run_sampler, f"VDM {sampler} {steps} steps of T = {timesteps}, seed {args.seed}, step {vdm.step}"


def _volume(arr: np.ndarray, source: Path, what: str) -> Volume:
    return Volume(np.ascontiguousarray(arr, dtype=np.float32), (1.0, 1.0), np.eye(4), "meddiff", Path(source),
                  {"modality": "OT", "units": "levels", "derived": what})
