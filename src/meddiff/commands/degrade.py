"""`meddiff degrade -i HIGHRES -o PAIRS --task sr --factor 4` (or denoise, inpaint): paired test sets."""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "degrade", help="make a paired test set (degraded inputs + truths) from your own high-resolution images",
        description="Degrade every image under --input as meddiff's training does (meddiff.data.degrade) and write "
                    "OUTPUT/input (degraded, in the input's format; super-resolution: the low-resolution image), "
                    "OUTPUT/truth (the originals, same names), OUTPUT/mask (inpainting) and OUTPUT/pairs.json. Then: "
                    "meddiff sample --checkpoint M -i OUTPUT/input -o PRED; "
                    "meddiff evaluate --pred m=PRED --truth OUTPUT/truth --input OUTPUT/input.")
    p.add_argument("-i", "--input", type=Path, required=True,
                   help="an image file, a DICOM series folder, or a folder of images (one subfolder per patient)")
    p.add_argument("-o", "--output", "--out", dest="output", type=Path, required=True,
                   help="new output folder (or one meddiff wrote, with --overwrite)")
    p.add_argument("--task", choices=("sr", "denoise", "inpaint"), default=None,
                   help="degradation: sr (anti-aliased downsampling), denoise (Gaussian + salt-and-pepper noise) or "
                        "inpaint (random boxes and strokes); default: the --checkpoint's task, else sr")
    p.add_argument("--checkpoint", default=None,
                   help="take the task and its settings from this model's config (a name from `meddiff models` or a file), "
                        "so the test set matches what the model was trained for")
    p.add_argument("--factor", type=float, default=None, help="super-resolution factor (default: the checkpoint's, else 4)")
    p.add_argument("--noise-std", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                   help="denoise: Gaussian sigma drawn per slice in [LO, HI], [-1, 1] units (default: training's, 0.05 0.2)")
    p.add_argument("--salt-pepper", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                   help="denoise: fraction of salt-and-pepper pixels drawn in [LO, HI] (default: training's, 0 0.05)")
    p.add_argument("--mask-coverage", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                   help="inpaint: fraction of each slice in holes, drawn in [LO, HI] (default: training's, 0.1 0.4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise and holes (per image, from its name; default 0)")
    p.add_argument("--axis", type=int, default=0, help="slice axis of 3D volumes ([Z,Y,X] order, default 0)")
    p.add_argument("--clip-percentiles", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                   help="normalise with these percentiles (as `meddiff sample`; default min/max)")
    p.add_argument("--allow-rgb", action="store_true", help="convert colour (RGB) images to gray instead of refusing them")
    p.add_argument("--overwrite", action="store_true", help="replace an output folder meddiff wrote")
    p.set_defaults(func=run)


def task_from_args(args: argparse.Namespace):
    """The TaskConfig: the checkpoint's (if given), then the command-line settings on top."""
    from ..config import TaskConfig
    from ..errors import InputError

    task = TaskConfig()
    if args.checkpoint is not None:
        from ..checkpointing.named import model_config

        cfg = model_config(args.checkpoint)
        if cfg.objective == "vdm" and not cfg.vdm.image_condition:
            raise InputError(f"--checkpoint {args.checkpoint}: an unconditional VDM (it generates images from noise and "
                             "restores none, so it has no degradation); expected a restoration model (super-resolution, "
                             "denoising or inpainting), or --task")
        task = cfg.task
    kind = args.task or task.kind
    changes = {"kind": kind, "sr_factors": ()}
    for flag, key, applies in (("factor", "sr_factor", "sr"), ("noise_std", "noise_std", "denoise"),
                               ("salt_pepper", "salt_pepper", "denoise"), ("mask_coverage", "mask_coverage", "inpaint")):
        value = getattr(args, flag)
        if value is not None and kind != applies:
            raise InputError(f"--{flag.replace('_', '-')} applies to --task {applies}, not {kind}")
        if value is not None:
            changes[key] = tuple(value) if isinstance(value, list) else value
    task = dataclasses.replace(task, **changes)
    _check_flag_values(args, task)
    return task


_FLAGS = {"sr_factor": "factor", "noise_std": "noise_std", "salt_pepper": "salt_pepper", "mask_coverage": "mask_coverage"}


def _check_flag_values(args: argparse.Namespace, task) -> None:
    """A degradation setting the task refuses (ConfigError naming task.KEY), re-raised naming the flag the user gave
    and its value (`--factor 0: expected a factor > 1`)."""
    from ..data.degrade import build_degradation
    from ..errors import ConfigError, InputError

    if args.factor is not None and not (math.isfinite(args.factor) and args.factor > 1):
        raise InputError(f"--factor {args.factor:g}: expected a finite factor > 1")
    try:
        build_degradation(task)
    except ConfigError as e:
        key, _, reason = str(e).partition(": ")
        flag = _FLAGS.get(key.removeprefix("task."))
        value = getattr(args, flag, None) if flag else None
        if value is None:
            raise
        shown = " ".join(f"{v:g}" for v in (value if isinstance(value, list) else [value]))
        raise InputError(f"--{flag.replace('_', '-')} {shown}: {reason}") from None


def run(args: argparse.Namespace) -> int:
    from ..data.pairs import make_pairs

    task = task_from_args(args)
    from ..io.phi import public_command

    provenance = {"command": public_command(args.argv)} if hasattr(args, "argv") else {}  # no paths (meddiff.io.phi)
    summary = make_pairs(args.input, args.output, task, seed=args.seed, axis=args.axis,
                         percentiles=tuple(args.clip_percentiles) if args.clip_percentiles else None,
                         allow_rgb=args.allow_rgb, overwrite=args.overwrite, provenance=provenance)
    out = args.output
    print(f"degraded {summary.images} image(s) ({task.kind}" + (f" x{task.sr_factor:g}" if task.kind == "sr" else "")
          + f", seed {args.seed}) into {out}/input, truths in {out}/truth" + (f", masks in {out}/mask" if task.kind == "inpaint" else ""))
    sr = " --input-kind lowres" if task.kind == "sr" else ""
    print(f"next: meddiff sample --checkpoint MODEL -i {out}/input -o PRED{sr}\n"
          f"      meddiff evaluate --pred model=PRED --truth {out}/truth --input {out}/input")
    return 0
