"""`meddiff train --config configs/sr_x4.yaml [SECTION.KEY=VALUE ...] [-i PREPARED] [-o DIR] [--device D] [--resume]`.

Trains the conditional DDPM of the config (or, with ``objective: vdm``, the variational
diffusion model of the ``vdm`` section, e.g. configs/vdm_cxr.yaml; with ``objective: baseline``
the learned baseline of the ``baseline`` section, e.g. configs/baselines/pix2pix_sr_x4.yaml) on the slices
`meddiff prepare` wrote to data.prepared. Under `torchrun --nproc_per_node N -m meddiff.cli train ...` it runs
data-parallel; train.batch_size is then per process (the global batch is N times larger).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from pathlib import Path

from .. import config as config_mod
from ..config import Config

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a conditional diffusion model (super-resolution, denoising or inpainting) or a VDM (objective: vdm)",
        description=(
            "Train on data.prepared (written by `meddiff prepare`). Any config key can be overridden "
            "as SECTION.KEY=VALUE (give them together, after --config), e.g. train.steps=2000 train.batch_size=8 "
            "model.channels=[32,64,128]. "
            "Writes OUT/checkpoints/step_NNNNNNN/ (model.safetensors = EMA weights for sampling), "
            "OUT/checkpoints/latest, OUT/train_log.csv, OUT/val_log.csv and OUT/loss.png. "
            "Under torchrun, train.batch_size is per process."
        ),
    )
    p.add_argument("--config", metavar="YAML", default=None, help="config file (default: built-in defaults)")
    p.add_argument("overrides", nargs="*", metavar="SECTION.KEY=VALUE", help="config overrides")
    p.add_argument("-i", "--input", metavar="DIR", default=None,
                   help="folder written by `meddiff prepare` (overrides data.prepared)")
    p.add_argument("-o", "--output", "--out", dest="out", metavar="DIR", default=None,
                   help="output folder (overrides train.out_dir)")
    p.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N (overrides train.device)")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT/checkpoints/latest (the config may differ only in train.steps, "
                        "logging/checkpoint/device settings and the sampler section)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def resolve_config(args: argparse.Namespace) -> Config:
    cfg = config_mod.load(args.config, args.overrides)
    if getattr(args, "input", None) is not None:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, prepared=str(args.input)))
    if getattr(args, "device", None) is not None:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, device=str(args.device)))
    if args.out is not None:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, out_dir=str(args.out)))
    return cfg


def claim_out_dir(cfg, resume: bool) -> None:
    """train.out_dir must not be or hold the prepared data, and a non-empty one must be meddiff's
    (a run folder: the loop then refuses existing checkpoints without --resume); marked as meddiff's."""
    from ..io.outdir import check_not_input, check_output_dir, mark, written_by_meddiff

    out = Path(cfg.train.out_dir)
    inputs = [p for p in (cfg.data.prepared, cfg.train.init_from) if p]
    if resume or (out / "checkpoints").is_dir():  # a run folder (perhaps from before the marker existed)
        check_not_input(out, inputs)
    else:
        check_output_dir(out, inputs, overwrite=written_by_meddiff(out), flag="--out NEW_FOLDER", verb="train")
    if int(os.environ.get("RANK", "0")) == 0:
        mark(out, "train")


def run(args: argparse.Namespace) -> int:
    from ..objectives import objective_class, training_data
    from ..train.loop import train

    cfg = resolve_config(args)
    claim_out_dir(cfg, args.resume)
    train_set, val_set, labels, names = training_data(cfg)
    result = train(cfg, train_set, family=objective_class(cfg), val_set=val_set, resume=args.resume,
                   progress=not args.no_progress, labels=labels, class_names=names)
    out = Path(cfg.train.out_dir)
    if int(os.environ.get("RANK", "0")) == 0:
        unit = " bits/dim (negative VLB)" if cfg.objective == "vdm" else ""
        print(f"trained {result.step} steps; last loss {result.loss if result.loss is None else f'{result.loss:.5f}'}{unit}")
        print(f"checkpoint: {result.checkpoint}  (model for sampling: {result.checkpoint}/model.safetensors)"
              if result.checkpoint else f"checkpoints: {out / 'checkpoints'} (none written)")
        print(f"log:        {result.log}" + (f"\nval log:    {result.val_log}" if val_set is not None else ""))
        print(f"loss plot:  {result.plot}")
    return 0
