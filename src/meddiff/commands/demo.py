"""`meddiff demo`: super-resolution x4 of a brain MRI no shipped model saw, with a report.

Offline and CPU-friendly: the recommended super-resolution model (`meddiff models`: sr_x4_general,
trained on the MNI152 template and synthetic contrasts, see src/meddiff/checkpoints/README.md)
super-resolves slices of Colin27 (another person, shipped in src/meddiff/data/samples/colin27) with
its one-call posterior mean. The low-resolution inputs are made by the Med-cDiff degradation
(anti-aliased x4 downsampling); the report compares bilinear, bicubic and meddiff against the
ground truth, with error maps and the metrics table, and shows the model's calibrated 90% interval
(lower, upper, width; as `meddiff sample --interval 0.9`) with its coverage and a reliability
diagram (predicted vs actual error per decile of predicted error) on these held-out slices. A
sampling model (--checkpoint demo_sr_x4) shows one sample, the mean of several and their spread.

examples:
  meddiff demo                                   # sr_x4_general, 8 slices -> runs/demo/report.html
  meddiff demo --slices 2 -o runs/demo_quick     # a quicker look
  meddiff demo --checkpoint demo_sr_x4 -o runs/demo_sampled   # 4 DPM-Solver++ samples and their spread
  meddiff demo --checkpoint sr_blind -o runs/demo_blind       # the model for MR acquired at low resolution
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import flag_errors


def __getattr__(name: str):
    """SAMPLED_CHECKPOINT (demo_sr_x4's file, evaluation.demo) without importing it at CLI start-up."""
    if name == "SAMPLED_CHECKPOINT":
        from ..evaluation.demo import SAMPLED_CHECKPOINT

        return SAMPLED_CHECKPOINT
    raise AttributeError(name)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="super-resolve held-out real MRI slices with the shipped model and write an HTML report",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", "--out", dest="out", type=Path, default=Path("runs/demo"), help="output folder (default runs/demo)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo's output folder (only one meddiff wrote)")
    p.add_argument("--checkpoint", default=None,
                   help="super-resolution model: a name from `meddiff models` or a file/folder (default: the one "
                        "models.yaml recommends for super-resolution x4, sr_x4_general: its posterior mean and "
                        "calibrated 90%% interval; --checkpoint demo_sr_x4 samples with DPM-Solver++ and shows the "
                        "samples' spread; with --volume: sr_x4_2p5d if shipped, else sr_x4_general)")
    p.add_argument("--task", choices=["sr", "denoise", "generate"], default="sr",
                   help="sr: MRI super-resolution (default); denoise: the chest X-ray denoiser on held-out films; generate: "
                        "chest films from the Medical VDM (meddiff.commands.demo_xray)")
    p.add_argument("--volume", action="store_true",
                   help="restore Colin27 as a volume (2D with shared noise, 2.5D, 3D or thick-slice models) and show the three "
                        "planes (volume.png, results.md; meddiff.commands.demo_volume)")
    p.add_argument("--slices", type=int, default=None,
                   help="number of held-out slices (evenly spaced; default 8); with --volume: the middle slices (default all)")
    p.add_argument("--crop", type=int, default=None, help="--volume: a centred in-plane crop of this size (default none)")
    p.add_argument("--noise", choices=["shared", "independent"], default=None,
                   help="--volume with a 2D model: one noise for every slice (shared, the default) or per slice")
    p.add_argument("--samples", type=int, default=None,
                   help="samples per slice (mean and std maps; default 1 for the posterior mean, whose draws are one "
                        "image, else 4; --volume draws one)")
    p.add_argument("--sampler", default=None, help="ancestral | ddim | dpm_solver_pp (default: the checkpoint's sampler.name)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the checkpoint's sampler.steps)")
    p.add_argument("--eta", type=float, default=None, help="ddim only: noise scale (default: the checkpoint's sampler.eta)")
    p.add_argument("--grid", choices=["auto", "uniform", "logsnr"], default=None,
                   help="ddim / dpm_solver_pp time grid (default: the checkpoint's sampler.grid)")
    p.add_argument("--precision", default=None, choices=["fp32", "bf16", "fp16", "auto"],
                   help="network precision (default: the checkpoint's sampler.precision)")
    p.add_argument("--consistency", choices=["none", "project"], default="none",
                   help="project: every x0 estimate (so the output) downsamples exactly to the low-res input")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler's noise (default 0)")
    p.add_argument("--device", default="auto", help="auto (a GPU if there is one) | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


@flag_errors  # the library names a setting by its field; here it is a flag
def run(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..evaluation.demo import DemoRequest, sr_demo
    from ..config.device import pick_device

    if args.task != "sr":
        from .demo_xray import run_denoise, run_generate

        if args.volume:
            raise InputError(f"--volume applies to --task sr, not --task {args.task}")
        return run_denoise(args) if args.task == "denoise" else run_generate(args)
    if args.volume:
        from .demo_volume import run_volume

        return run_volume(args)
    if args.crop is not None or args.noise is not None:
        raise InputError("--crop and --noise apply to `meddiff demo --volume` only")
    result = sr_demo(DemoRequest(out=args.out, checkpoint=args.checkpoint, slices=8 if args.slices is None else args.slices,
                                 samples=args.samples, sampler=args.sampler, steps=args.steps, eta=args.eta, grid=args.grid,
                                 precision=args.precision, consistency=args.consistency, seed=args.seed,
                                 device=pick_device(args.device, what="--device"), progress=not args.no_progress,
                                 overwrite=args.overwrite))
    if result.calibration_md:
        print(result.calibration_md)
    if result.reliability_md:
        print(result.reliability_md)
    print(result.table_md)
    print(f"report: {result.report}  ({result.seconds:.0f} s in all)")
    return 0
