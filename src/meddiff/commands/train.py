"""`meddiff train --config configs/sr_x4.yaml [SECTION.KEY=VALUE ...] [--resume] [--out DIR]`.

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
from ..config import AugmentConfig, Config
from ..errors import ConfigError, InputError

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
    p.add_argument("--out", metavar="DIR", default=None, help="output folder (overrides train.out_dir)")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT/checkpoints/latest (the config may differ only in train.steps, "
                        "logging/checkpoint/device settings and the sampler section)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def resolve_config(args: argparse.Namespace) -> Config:
    cfg = config_mod.load(args.config, args.overrides)
    if args.out is not None:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, out_dir=str(args.out)))
    return cfg


def check_sizes(cfg: Config, slice_size: int) -> None:
    """The prepared slices must have data.size, and the trained size must suit the U-Net."""
    if slice_size != cfg.data.size:
        raise ConfigError(f"data.size is {cfg.data.size} but the slices in {cfg.data.prepared} are {slice_size}x{slice_size} "
                          f"(set data.size={slice_size} or re-run `meddiff prepare --size {cfg.data.size}`)")
    multiple = 2 ** (len(cfg.model.channels) - 1)
    size = cfg.data.crop or cfg.data.size
    if cfg.objective == "vdm" and cfg.vdm.score != "unet":
        return
    if cfg.objective == "baseline":
        from ..baselines.registry import baseline_size_multiple
        from ..data.degrade import build_degradation
        multiple = baseline_size_multiple(cfg, build_degradation(cfg.task).cond_channels)
        if size % multiple:
            raise ConfigError(f"data.crop/data.size: training size {size} must be a multiple of {multiple} "
                              f"for baseline {cfg.baseline.name} (baseline.depth {cfg.baseline.depth})")
        return
    if size % multiple:
        raise ConfigError(f"data.crop/data.size: training size {size} must be a multiple of {multiple} "
                          f"for a U-Net with {len(cfg.model.channels)} levels")


def class_labels(cfg: Config, prep) -> tuple[dict[str, int] | None, list[str]]:
    """VDM class labels: (case_id -> class index over all splits, sorted class names), or (None, [])."""
    from ..data.split import SPLITS
    from ..vdm.build import case_labels, class_names, label_indices

    if cfg.objective != "vdm" or cfg.vdm.n_classes == 0:
        return None, []
    by_case = case_labels(prep, SPLITS, cfg.vdm.label_from, cfg.vdm.labels_csv)
    names = class_names(list(by_case.values()), cfg.vdm.n_classes)
    return dict(zip(by_case, label_indices(list(by_case.values()), names))), names


def build_datasets(cfg: Config):
    """(train set, val set or None) from data.prepared."""
    from ..data.dataset import PairDataset, load_prepared
    from ..data.degrade import build_degradation

    if cfg.data.mode == "volume":  # 3D patches / 2.5D stacks from `meddiff prepare --mode volume`
        from ..data.volume_dataset import build_volume_datasets
        return build_volume_datasets(cfg, build_degradation(cfg.task, training=True), build_degradation(cfg.task))
    prep = load_prepared(cfg.data.prepared)
    if cfg.objective == "vdm" and not cfg.vdm.image_condition:
        from ..vdm.build import NoCondition
        deg = NoCondition()
    else:
        deg = build_degradation(cfg.task, training=True)
    train_deg = deg
    if cfg.augment != AugmentConfig():  # acquisition variety (SR) for the training pairs only
        from ..data.augment import acquisition_changed, build_acquisition
        if acquisition_changed(cfg.augment):
            train_deg = build_acquisition(cfg.task, cfg.augment)  # refuses a task other than sr
    train_set = PairDataset(prep, cfg.data.train_split, train_deg, crop=cfg.data.crop, train=True, seed=cfg.train.seed)
    check_sizes(cfg, int(train_set.array.shape[-1]))
    if cfg.augment != AugmentConfig():
        from ..data.augment import build_appearance
        from ..data.synth import MixedPairs
        train_set = MixedPairs(train_set, fraction=cfg.augment.synth_fraction, shapes=cfg.augment.synth_shapes,
                               appearance=build_appearance(cfg.augment))
    try:
        val_set = PairDataset(prep, cfg.data.val_split, deg, crop=0, train=False, seed=cfg.train.seed)
    except InputError as e:
        log.info("no validation loss: %s", e)
        val_set = None
    return train_set, val_set


def claim_out_dir(cfg, resume: bool) -> None:
    """train.out_dir must not be or hold the prepared data, and a non-empty one must be meddiff's
    (a run folder: the loop then refuses existing checkpoints without --resume); marked as meddiff's."""
    from ..io.outdir import check_not_input, check_output_dir, mark, written_by_meddiff

    out = Path(cfg.train.out_dir)
    inputs = [p for p in (cfg.data.prepared, cfg.train.init_from) if p]
    if resume or (out / "checkpoints").is_dir():  # a run folder (perhaps from before the marker existed)
        check_not_input(out, inputs)
    else:
        check_output_dir(out, inputs, overwrite=written_by_meddiff(out), flag="--out NEW_FOLDER")
    if int(os.environ.get("RANK", "0")) == 0:
        mark(out, "train")


def run(args: argparse.Namespace) -> int:
    from ..io.atomic import check_writable_dir
    from ..train.loop import train

    cfg = resolve_config(args)
    check_writable_dir(cfg.train.out_dir, "training output folder (--out / train.out_dir)")
    claim_out_dir(cfg, args.resume)
    train_set, val_set = build_datasets(cfg)
    labels, names = class_labels(cfg, train_set.prepared)
    result = train(cfg, train_set, val_set=val_set, resume=args.resume, progress=not args.no_progress,
                   labels=labels, class_names=names)
    out = Path(cfg.train.out_dir)
    if int(os.environ.get("RANK", "0")) == 0:
        unit = " bits/dim (negative VLB)" if cfg.objective == "vdm" else ""
        print(f"trained {result.step} steps; last loss {result.loss if result.loss is None else f'{result.loss:.5f}'}{unit}")
        print(f"checkpoint: {result.checkpoint}  (model for sampling: {result.checkpoint}/model.safetensors)"
              if result.checkpoint else f"checkpoints: {out / 'checkpoints'} (none written)")
        print(f"log:        {result.log}" + (f"\nval log:    {result.val_log}" if val_set is not None else ""))
        print(f"loss plot:  {result.plot}")
    return 0
