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

from ..errors import InputError


def run(args: argparse.Namespace) -> int:
    from ..train.distributed import pick_device
    from ..vdm.checkpoint import load_vdm
    from ..vdm.generate import generate_images, generation_steps, resolve_labels, write_generated

    device = pick_device(args.device, what="--device")
    vdm = load_vdm(args.checkpoint, device=device)
    cfg = vdm.cfg
    from ..checkpointing.weights import use_weights

    weights = use_weights(vdm.model, args.checkpoint, cfg, getattr(args, "weights", "ema"))
    if cfg.vdm.image_condition:
        raise InputError(f"{vdm.file}: an image-conditional VDM (restoration) cannot generate without an input")
    steps = generation_steps(vdm, args.steps)
    n = args.num
    if n < 1:
        raise InputError(f"--num {n}: expected >= 1")
    if args.batch_size < 1:
        raise InputError(f"--batch-size {args.batch_size}: expected >= 1")
    labels, names = resolve_labels(args.label, vdm.class_names, n)
    x = generate_images(vdm, n, steps=steps, seed=args.seed, labels=labels, batch_size=args.batch_size, device=device)
    what = f"VDM sample, {steps} ancestral steps, seed {args.seed}, step {vdm.step}, {weights}"
    import shlex

    prov = {"sampler": "ancestral", "steps": steps, "seed": args.seed,
            **({"command": shlex.join(args.argv)} if hasattr(args, "argv") else {})}
    written = write_generated(vdm, x, args.output, names, what, args.format, provenance=prov)
    print(f"wrote {len(written)} file(s) under {args.output} (grid.png and {n} sample(s), {steps} steps)")
    return 0
