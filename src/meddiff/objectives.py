"""The model families meddiff trains, by the config's ``objective``: each implements
`meddiff.objective.Objective` in its own package. The training loop asks this registry for the
family of a config and never names one itself."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from torch.utils.data import Dataset

from .baselines.objective import BaselineObjective
from .config import Config
from .diffusion.objective import DDPMObjective
from .errors import ConfigError
from .objective import Objective, Runtime
from .vdm.objective import VDMObjective

OBJECTIVES: dict[str, type] = {"ddpm": DDPMObjective, "vdm": VDMObjective, "baseline": BaselineObjective}


def objective_class(cfg: Config) -> type:
    if cfg.objective not in OBJECTIVES:
        raise ConfigError(f"objective: {cfg.objective!r} is not one of {sorted(OBJECTIVES)}")
    return OBJECTIVES[cfg.objective]


def describe_data(cfg: Config, train_set: Dataset, labels: Mapping[str, int] | None, class_names: Sequence[str]) -> Any:
    """What the family needs to know about the training data before it builds its model (the VDM: the
    example shape and class labels, checked against the config; None for the others)."""
    return objective_class(cfg).describe_data(cfg, train_set, labels, class_names)


def build_objective(cfg: Config, runtime: Runtime, data: Any = None) -> Objective:
    """The Objective of cfg.objective, its network built on runtime.device (seed torch first)."""
    return objective_class(cfg)(cfg, runtime, data)
