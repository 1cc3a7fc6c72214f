"""`meddiff sample --checkpoint VDM_CKPT --output DIR [--num N] [--label L] [--guidance W] [--steps S]`: generation
from a variational diffusion model (meddiff.vdm), called by `meddiff sample` when the checkpoint
has format "meddiff-vdm-v1" and no --input is given. With --input, a VDM trained with
vdm.image_condition restores the input through the restore pipeline (meddiff.restore).

Writes DIR/grid.png (all samples tiled, row-major) and one file per sample,
DIR/sample_0000[_<class>].<png|nii.gz|dcm> (--format same = png). Intensities are the model's
levels 0..V-1 (PNG: 8 bit when V <= 256, window 0..V-1). Every file carries meddiff's synthetic
marker (DICOM DerivationDescription/ImageComments, NIfTI descrip, PNG text). Sample i uses the
seed --seed + i, so it does not depend on --num or --batch-size. Class-conditional models:
--label is a class name or index; without it sample i gets class i mod n_classes. --guidance W
(class-conditional models) is classifier-free guidance, eps = (1 + W) eps(z, c) - W eps(z, no class)
at every step (meddiff.vdm.sampling.guided_score); 0, the default, is the unguided sampler.
"""

from __future__ import annotations

import argparse
import math
import sys

from ..errors import InputError


def check_guidance(vdm, w: float) -> float:
    """--guidance W of a loaded VDM: refused when negative or not finite, or for an unconditional VDM;
    a one-line warning on stderr when the checkpoint was trained without label dropout (its "no class"
    branch, the zero class vector, was then never trained). Returns w as a float."""
    w = float(w)
    if not math.isfinite(w) or w < 0:
        raise InputError(f"--guidance {w:g}: expected a weight w >= 0 (0 = no guidance)")
    if w == 0:
        return w
    if not vdm.class_names:
        raise InputError(f"--guidance {w:g}: {vdm.file} is an unconditional VDM (vdm.n_classes 0); classifier-free "
                         "guidance needs a class-conditional one")
    if vdm.cfg.vdm.label_dropout == 0:
        print(f"warning: --guidance {w:g}: {vdm.file} was trained with vdm.label_dropout 0, so its unconditional "
              "branch (no class) was never trained; the guided samples may be meaningless", file=sys.stderr)
    return w


def run(args: argparse.Namespace) -> int:
    from ..config.device import pick_device
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
    w = check_guidance(vdm, getattr(args, "guidance", 0.0))
    labels, names = resolve_labels(args.label, vdm.class_names, n)
    x = generate_images(vdm, n, steps=steps, seed=args.seed, labels=labels, batch_size=args.batch_size, device=device,
                        guidance=w)
    what = f"VDM sample, {steps} ancestral steps, seed {args.seed}, step {vdm.step}, {weights}" + \
        (f", guidance {w:g}" if w else "")
    import shlex

    prov = {"sampler": "ancestral", "steps": steps, "seed": args.seed, "guidance": w,
            **({"command": shlex.join(args.argv)} if hasattr(args, "argv") else {})}
    written = write_generated(vdm, x, args.output, names, what, args.format, provenance=prov)
    print(f"wrote {len(written)} file(s) under {args.output} (grid.png and {n} sample(s), {steps} steps)")
    return 0
