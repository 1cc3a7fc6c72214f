"""The distilled student's section (`distill`, objective distill; meddiff.distill) and its rules."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ..errors import ConfigError

if TYPE_CHECKING:
    from . import Config


@dataclass(frozen=True)
class DistillConfig:
    """A few-step student of a teacher checkpoint (top-level ``objective: distill``; meddiff.distill):
    the student (the teacher's network, started from its weights) learns to map (x_T, condition) to
    the teacher's deterministic sample from the same x_T in one call (Luhman & Luhman 2021; SinSR)."""

    teacher: str = ""  # the teacher: a DDPM model file, checkpoint, run folder or shipped model name
    sampler: Literal["dpm_solver_pp", "ddim"] = "dpm_solver_pp"  # the teacher's ODE sampler (ddim with eta 0)
    steps: int = 10  # the teacher's network calls per target
    grid: Literal["auto", "uniform", "logsnr"] = "auto"  # the teacher's time grid (auto: as `meddiff sample`)
    items: int = 2048  # training targets precomputed once from the training pairs (the student's training set)
    val_items: int = 16  # validation targets from the val split (0: no validation loss)
    cache: str = ""  # the targets' file (default OUT/distill_targets.safetensors); resumed if it matches
    batch_size: int = 16  # teacher batch while precomputing


def validate(cfg: Config) -> None:
    """Ranges of the distill section always; a teacher only when objective is distill."""
    s = cfg.distill
    for key, low in (("steps", 1), ("items", 1), ("val_items", 0), ("batch_size", 1)):
        if getattr(s, key) < low:
            raise ConfigError(f"distill.{key}: expected an integer >= {low}, got {getattr(s, key)}")
    if cfg.objective != "distill":
        return
    if not s.teacher:
        raise ConfigError("distill.teacher: objective distill needs a teacher checkpoint (a model file, run folder or "
                          "shipped model name)")
    if cfg.sampler.name != "student":
        raise ConfigError(f"sampler.name: a distilled student samples with 'student' (its stored default), "
                          f"got {cfg.sampler.name!r}")
