"""`meddiff prepare -i INPUT_DIR -o OUTPUT_DIR` (or the positional form `meddiff prepare INPUT_DIR OUTPUT_DIR`): images -> normalised 2D slices split by patient."""

from __future__ import annotations

import argparse

from ..data.prepare import PrepareOptions, prepare


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare",
        help="slice, normalise (per patient), resize and split (by patient) a folder of images",
        description=(
            "Find every image under INPUT_DIR (DICOM, NIfTI, PNG, TIFF, NPY), normalise each patient's "
            "intensities to [-1, 1], cut 3D volumes into 2D slices, drop empty slices, pad to square, "
            "resize, split train/val/test by patient and write OUTPUT_DIR (train/val/test.npy, "
            "manifest.csv, normalisation.json, prepare.json, skipped.csv)."
        ),
    )
    p.add_argument("-i", "--input", dest="input_flag", metavar="INPUT_DIR", default=None,
                   help="folder of images (DICOM, NIfTI, PNG, TIFF, NPY), one subfolder per patient")
    p.add_argument("-o", "--output", "--out", dest="output_flag", metavar="OUTPUT_DIR", default=None,
                   help="new output folder (or one meddiff wrote, with --overwrite)")
    p.add_argument("input_dir", metavar="INPUT_DIR", nargs="?", default=None, help="same as -i (older positional form)")
    p.add_argument("output_dir", metavar="OUTPUT_DIR", nargs="?", default=None, help="same as -o (older positional form)")
    p.add_argument("--patient-from", choices=("subfolder", "file"), default="subfolder",
                   help="patient id = first-level subfolder name (default) or each file is its own patient")
    p.add_argument("--axis", choices=("0", "1", "2", "all"), default="0",
                   help="array axis of [Z, Y, X] volumes to slice along, or all three (default 0)")
    p.add_argument("--size", type=int, default=128, help="side of the square output slices (default 128)")
    p.add_argument("--clip-percentiles", type=float, nargs=2, metavar=("LO", "HI"), default=None,
                   help="robust window, e.g. 0.5 99.5 (default: plain min/max per patient)")
    p.add_argument("--split", type=float, nargs=3, metavar=("TRAIN", "VAL", "TEST"), default=(0.8, 0.1, 0.1),
                   help="fractions of PATIENTS per split (default 0.8 0.1 0.1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the patient split (default 0)")
    p.add_argument("--min-foreground", type=float, default=0.05,
                   help="drop slices whose fraction of non-background pixels is below this (default 0.05)")
    p.add_argument("--on-error", choices=("stop", "skip"), default="stop",
                   help="on an unreadable file: stop with an error (default) or skip it and list it in skipped.csv")
    p.add_argument("--mode", choices=("slices", "volume"), default="slices",
                   help="slices (default): 2D slices as above; volume: whole volumes resampled to --spacing on a RAS grid "
                        "for 3D / 2.5D training (volumes/*.npy, volumes.csv; --axis, --size, --min-foreground do not apply)")
    p.add_argument("--spacing", type=float, nargs="+", default=None, metavar="MM",
                   help="--mode volume: target voxel size in mm, one value (isotropic) or three (Z Y X = S A R); default 1")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT_DIR if it exists")
    p.add_argument("--keep-patient-tags", action="store_true",
                   help="write patient ids (subfolder names, DICOM PatientID) and folder names as they are into manifest.csv, "
                        "normalisation.json and prepare.json (default: their pseudonyms, MD + 10 hex digits; meddiff.io.phi)")
    p.add_argument("--patient-map", default=None, metavar="FILE",
                   help="also write FILE (CSV: pseudonym, patient_id), written atomically. It holds PHI (the real patient "
                        "ids): keep it apart from the data you share")
    p.add_argument("--allow-rgb", action="store_true",
                   help="convert colour (RGB) images to gray with BT.601 luma weights instead of refusing them")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def _check_size_fits(size: int) -> None:
    """InputError for a --size whose slices cannot be held: a few float32 working copies of one slice beyond the
    machine's memory (else the allocation fails mid-run with the allocator's error)."""
    import os

    from ..errors import InputError

    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return
    need = size * size * 4 * 8
    if need > memory:
        raise InputError(f"--size {size}: a {size} x {size} slice needs about {need / 2**30:.0f} GiB of working memory, more "
                         f"than this machine's {memory / 2**30:.0f} GiB; expected a smaller size (e.g. 128 to 1024)")


def options_from_args(args: argparse.Namespace) -> PrepareOptions:
    from ..errors import InputError

    if args.size < 8:
        raise InputError(f"--size: expected at least 8 pixels, got {args.size}")
    _check_size_fits(args.size)
    if not 0.0 <= args.min_foreground <= 1.0:
        raise InputError(f"--min-foreground: expected a fraction in [0, 1], got {args.min_foreground}")
    return PrepareOptions(
        patient_from=args.patient_from,
        axes=(0, 1, 2) if args.axis == "all" else (int(args.axis),),
        size=args.size,
        percentiles=tuple(args.clip_percentiles) if args.clip_percentiles else None,
        split=tuple(args.split),
        seed=args.seed,
        min_foreground=args.min_foreground,
        on_error=args.on_error,
        overwrite=args.overwrite,
        allow_rgb_to_gray=getattr(args, "allow_rgb", False),
        keep_patient_ids=getattr(args, "keep_patient_tags", False),
        patient_map=getattr(args, "patient_map", None),
    )


def input_output(args: argparse.Namespace) -> tuple[str, str]:
    """INPUT_DIR and OUTPUT_DIR from -i/-o or the positional form (not both, not neither)."""
    from ..errors import InputError

    pos = [a for a in (args.input_dir, args.output_dir) if a is not None]
    flags = [a for a in (args.input_flag, args.output_flag) if a is not None]
    if pos and flags:
        raise InputError(f"give the folders as -i INPUT_DIR -o OUTPUT_DIR or as two positional arguments, not both "
                         f"(got {' '.join(pos)} and -i/-o {' '.join(flags)})")
    inp, out = (args.input_flag, args.output_flag) if flags else (args.input_dir, args.output_dir)
    if inp is None or out is None:
        raise InputError("give the input and output folders: meddiff prepare -i INPUT_DIR -o OUTPUT_DIR")
    return inp, out


def run(args: argparse.Namespace) -> int:
    input_dir, output_dir = input_output(args)
    if args.mode == "volume":
        return run_volume(args, input_dir, output_dir)
    if args.spacing is not None:
        from ..errors import InputError
        raise InputError("--spacing applies to --mode volume only")
    options = options_from_args(args)
    summary = prepare(input_dir, output_dir, options, progress=not args.no_progress)
    print("\n".join(summary.lines()))
    return 0


def run_volume(args: argparse.Namespace, input_dir, output_dir) -> int:
    """`meddiff prepare --mode volume`: meddiff.data.volumes.prepare_volumes."""
    from ..data.volumes import VolumeOptions, prepare_volumes
    from ..errors import InputError

    spacing = tuple(args.spacing or (1.0,))
    if len(spacing) not in (1, 3):
        raise InputError(f"--spacing: expected one or three values in mm, got {list(spacing)}")
    options = VolumeOptions(spacing=spacing * 3 if len(spacing) == 1 else spacing, patient_from=args.patient_from,
                            percentiles=tuple(args.clip_percentiles) if args.clip_percentiles else None,
                            split=tuple(args.split), seed=args.seed, overwrite=args.overwrite)
    counts = prepare_volumes(input_dir, output_dir, options)
    print(f"volumes on a {'x'.join(f'{s:g}' for s in options.spacing)} mm RAS grid: "
          + ", ".join(f"{k} {v}" for k, v in counts.items()) + f" -> {output_dir}")
    return 0
