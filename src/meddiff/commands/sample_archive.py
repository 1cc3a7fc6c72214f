"""`meddiff sample --engine local|ray ... | --shard I/N`: the archive options of `meddiff sample` (meddiff.restore.archive).

Without these options `meddiff sample` restores its input in one plain loop, as before. With them
the input folder is an archive: OUT/manifest.csv lists its units (DICOM series, NIfTI volumes,
image files) with content hashes, each unit is marked done by OUT/.units/<unit>.json, a re-run
skips what is done (and changed settings redo it), failures go to OUT/failed.csv. docs/archive.md.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("archives (docs/archive.md)")
    g.add_argument("--engine", choices=["local", "ray"], default=None,
                   help="restore the --input folder as an archive of units that resumes: local = this process "
                        "(the plain loop's results), ray = Ray actors (pip install 'meddiff[ray]')")
    g.add_argument("--address", default=None, help="ray: auto (this node's cluster), HOST:PORT of its head, or "
                   "ray://HOST:10001 from outside it (default: start a local cluster)")
    g.add_argument("--workers", type=int, default=None, help="ray: actors, each loading the model once "
                   "(default: the cluster's CPUs, or GPUs / --gpus-per-worker)")
    g.add_argument("--gpus-per-worker", type=float, default=0.0, help="ray: GPUs per actor, e.g. 1 or 0.5 (default 0: CPU)")
    g.add_argument("--retries", type=int, default=2, help="more attempts for a unit whose worker died or that failed "
                   "unexpectedly (a bad input is not retried; default 2)")
    g.add_argument("--shard", default=None, metavar="I/N", help="a job array's share: units I, I+N, I+2N, ... of the "
                   "manifest (e.g. --shard $((SLURM_ARRAY_TASK_ID+1))/$SLURM_ARRAY_TASK_COUNT); no engine needed")


def requested(args: argparse.Namespace) -> bool:
    """Any archive option given (the Ray-only ones too, so that run() can refuse them without --engine ray)."""
    from ..errors import InputError

    if getattr(args, "retries", 0) < 0:  # checked here too: a plain run ignores --retries, but not a wrong one
        raise InputError(f"--retries {args.retries}: expected >= 0")
    return any(getattr(args, k, None) is not None for k in ("engine", "shard", "address", "workers")) or bool(
        getattr(args, "gpus_per_worker", 0))


def run(args: argparse.Namespace) -> int:
    """Parse the archive options, run the archive, print the summary; 1 if a unit failed."""
    from ..errors import InputError
    from ..restore import Request
    from ..restore.archive import ArchiveOptions, run_archive
    from ..restore.manifest import parse_shard, tag_of

    if args.engine != "ray" and (args.address is not None or args.workers is not None or args.gpus_per_worker):
        raise InputError("--address, --workers and --gpus-per-worker apply to --engine ray only")
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers {args.workers}: expected >= 1")
    shard = parse_shard(args.shard) if args.shard else None
    options = ArchiveOptions(engine=args.engine or "local", address=args.address, workers=args.workers,
                             gpus_per_worker=args.gpus_per_worker, retries=args.retries, shard=shard)
    summary = run_archive(Request.from_namespace(args), options, args.device)
    print(f"archive {args.output}: {summary.line()}")
    if summary.failed:
        print(f"meddiff sample: {summary.failed} unit(s) failed: see {args.output / f'failed{tag_of(shard)}.csv'}")
    if summary.failed:
        # exit 1 says some units failed, but the done ones and failed.csv are the run's work: the folder
        # stays (a re-run resumes it) instead of being removed as a failed command's output
        from ..io.outdir import forget_claims

        forget_claims()
        return 1
    return 0
