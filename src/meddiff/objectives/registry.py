"""The model families meddiff trains, by the config's ``objective``: each implements
`meddiff.objectives.protocol.Objective` in its own module of this package. `meddiff train` asks this registry for the
family of a config (`objective_class`) and passes it to the training loop, which imports no family."""

from __future__ import annotations

import logging


from .baseline import BaselineObjective
from ..config import AugmentConfig, Config
from ..data.augment import acquisition_changed, build_acquisition, build_appearance
from .ddpm import DDPMObjective
from .distill import DistillObjective
from ..data.dataset import PairDataset, load_prepared
from ..data.synth import MixedPairs
from ..errors import ConfigError, InputError
from .vdm import VDMObjective

log = logging.getLogger(__name__)

OBJECTIVES: dict[str, type] = {"ddpm": DDPMObjective, "vdm": VDMObjective, "baseline": BaselineObjective,
                               "distill": DistillObjective}


def objective_class(cfg: Config) -> type:
    if cfg.objective not in OBJECTIVES:
        raise ConfigError(f"objective: {cfg.objective!r} is not one of {sorted(OBJECTIVES)}")
    return OBJECTIVES[cfg.objective]


def check_sizes(cfg: Config, slice_size: int) -> None:
    """The prepared slices must have data.size, and the trained size must suit the network."""
    if slice_size != cfg.data.size:
        raise ConfigError(f"data.size is {cfg.data.size} but the slices in {cfg.data.prepared} are {slice_size}x{slice_size} "
                          f"(set data.size={slice_size} or re-run `meddiff prepare --size {cfg.data.size}`)")
    rule = objective_class(cfg).size_multiple(cfg)
    size = cfg.data.crop or cfg.data.size
    if rule is not None and size % rule[0]:
        raise ConfigError(f"data.crop/data.size: training size {size} must be a multiple of {rule[0]} for {rule[1]}")


def training_data(cfg: Config) -> tuple[PairDataset, PairDataset | None, dict[str, int] | None, list[str]]:
    """(train set, val set or None, class labels case_id -> index or None, class names) from data.prepared,
    with the family's training degradation, sizes checked."""
    if cfg.data.mode == "volume":  # 3D patches / 2.5D stacks from `meddiff prepare --mode volume`
        from ..data.degrade import build_degradation
        from ..data.volume_dataset import build_volume_datasets

        if acquisition_changed(cfg.augment):
            raise ConfigError("augment: acquisition variety (sr_kernels, blur, noise) is not built for data.mode volume; "
                              "appearance (gamma, bias_field) and synth_fraction are")
        train_set, val_set = build_volume_datasets(cfg, build_degradation(cfg.task, training=True), build_degradation(cfg.task),
                                                   appearance=build_appearance(cfg.augment),
                                                   synth_fraction=cfg.augment.synth_fraction)
        return train_set, val_set, None, []
    prep = load_prepared(cfg.data.prepared)
    deg = objective_class(cfg).degradation(cfg)
    train_deg = deg
    if acquisition_changed(cfg.augment):  # acquisition variety: training pairs only
        train_deg = build_acquisition(cfg.task, cfg.augment)  # refuses a task other than sr
    train_set = PairDataset(prep, cfg.data.train_split, train_deg, crop=cfg.data.crop, train=True, seed=cfg.train.seed)
    check_sizes(cfg, int(train_set.array.shape[-1]))
    if cfg.augment != AugmentConfig():  # appearance variety and synthetic contrasts (meddiff.data.synth)
        train_set = MixedPairs(train_set, fraction=cfg.augment.synth_fraction, shapes=cfg.augment.synth_shapes,
                               appearance=build_appearance(cfg.augment))
    try:
        val_set = PairDataset(prep, cfg.data.val_split, deg, crop=0, train=False, seed=cfg.train.seed)
    except InputError as e:
        log.info("no validation loss: %s", e)
        val_set = None
    labels, names = objective_class(cfg).class_labels(cfg, train_set.prepared)
    train_set, val_set = objective_class(cfg).training_sets(cfg, train_set, val_set)  # a student's: its teacher's outputs
    return train_set, val_set, labels, names
