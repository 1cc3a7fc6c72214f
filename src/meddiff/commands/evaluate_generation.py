"""`meddiff evaluate --generated DIR --real DIR [--checkpoint VDM --prepared DIR] [--out DIR]`: scores of
unconditional generation (meddiff.metrics.generation): FID, KID, precision/recall and held-out
bits/dim in one table, and the two sets as grids enlarged for viewing. Argument parsing only."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("generation (unconditional samples against real images, instead of --pred/--truth)")
    g.add_argument("--generated", type=Path, default=None, help="folder of generated images (e.g. meddiff sample's output)")
    g.add_argument("--real", type=Path, default=None,
                   help="folder of real images, or a `meddiff prepare` folder (then its --split)")
    g.add_argument("--real-size", choices=("resize", "refuse"), default="resize",
                   help="real images of another size than the generated: resample them to it (default; said in the table) "
                        "or refuse")
    g.add_argument("--k", type=int, default=3, help="neighbours of the precision/recall k-NN manifolds (default 3)")


def run(args: argparse.Namespace) -> int:
    from ..metrics.generation import evaluate_generation

    if args.generated is None or args.real is None:
        raise InputError("--generated DIR and --real DIR are both needed to score generated images")
    if args.pred or args.truth:
        raise InputError("give --generated/--real (unpaired sets) or --pred/--truth (paired images), not both")
    if args.k < 1:
        raise InputError(f"--k {args.k}: expected >= 1")
    bits = None
    if args.checkpoint is not None:
        if args.prepared is None:
            raise InputError("held-out bits/dim needs --prepared DIR beside --checkpoint")
        from ..checkpointing.named import locate
        from ..vdm.likelihood import heldout_total

        bits = heldout_total(locate(args.checkpoint), args.prepared, split=args.split, draws=args.draws, seed=args.seed)
    out = args.out if args.out is not None else args.generated.parent / "generation_eval"
    scores = evaluate_generation(args.generated, args.real, out, split=args.split, bits_per_dim=bits, draws=args.draws,
                                 k=args.k, seed=args.seed, real_size=args.real_size)
    print(scores.markdown())
    print(f"wrote generation.md, generation.csv, generation.json, grid_generated.png and grid_real.png to {out}")
    return 0
