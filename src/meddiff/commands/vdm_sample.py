"""`meddiff sample --checkpoint VDM_CKPT --output DIR [--num N] [--label L] [--steps S]`: generation
from a variational diffusion model (meddiff.vdm), called by `meddiff sample` when the checkpoint
has format "meddiff-vdm-v1" and no --input is given. With --input, a VDM trained with
vdm.image_condition restores the input through the restore pipeline (meddiff.restore).

Writes DIR/grid.png (all samples tiled, row-major) and one file per sample,
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
    from ..vdm.generate import generate_levels, image_grid

    device = pick_device(args.device)
    vdm = load_vdm(args.checkpoint, device=device)
    cfg = vdm.cfg
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
    what = f"VDM sample, {steps} ancestral steps, seed {args.seed}, step {vdm.step}"
    written = write_volume(_volume(image_grid(x, fill=0.0), vdm.file, what), out / "grid.png", synthetic=True,
                           description=f"meddiff {what} (grid)", bits=bits, window=(0.0, v - 1.0))
    ext = _EXT[args.format]
    for i in range(n):
        name = f"sample_{i:04d}" + (f"_{names[i]}" if names[i] else "")
        desc = f"meddiff {what}" + (f", class {names[i]}" if names[i] else "")
        written += write_volume(_volume(x[i], vdm.file, desc), out / f"{name}{ext}", synthetic=True, description=desc,
                                bits=bits, window=(0.0, v - 1.0) if ext == ".png" else None, overwrite=True)
    print(f"wrote {len(written)} file(s) under {out} (grid.png and {n} sample(s), {steps} steps)")
    return 0


def _volume(arr: np.ndarray, source: Path, what: str) -> Volume:
    return Volume(np.ascontiguousarray(arr, dtype=np.float32), (1.0, 1.0), np.eye(4), "meddiff", Path(source),
                  {"modality": "OT", "units": "levels", "derived": what})
