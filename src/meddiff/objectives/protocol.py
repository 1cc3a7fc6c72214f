"""The contract between the training loop and a model family (DDPM, VDM, learned baseline).

`meddiff.train.loop` owns everything every family shares: data order and seeds, the learning-rate
schedule, global RNG seeding per step, EMA, checkpoints, resume, logs. An `Objective` owns the rest:
its network, its optimiser(s), what one step computes and how it is validated, and the metadata its
checkpoints carry. The loop sees only this protocol and receives the family's class (an
`ObjectiveFamily`) from its caller; `meddiff.objectives.registry` maps a config's ``objective`` to the
implementation (`objectives.ddpm.DDPMObjective`, `objectives.vdm.VDMObjective`,
`objectives.baseline.BaselineObjective`, `objectives.distill.DistillObjective`).

Shapes: a training batch is `meddiff.data.order.Batch` (x0 [B, 1, H, W] in [-1, 1], cond, mask,
case_id, position).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol

import torch
from torch import Tensor, nn

from ..errors import TrainingError


@dataclass(frozen=True)
class Runtime:
    """Where training runs: the device, this process's rank, and the two collective operations an
    objective may need (the loop provides them from meddiff.train.distributed)."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    wrap: Callable[[nn.Module], nn.Module] = lambda m: m  # DDP wrapper (identity in one process)
    mean_over_ranks: Callable[[Tensor], Tensor] = lambda t: t

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


@dataclass(frozen=True)
class StepContext:
    """What one optimiser step of an objective needs from the loop."""

    step: int  # 0-based
    seed: int  # train.seed
    batch_size: int  # per rank
    grad_clip: float  # max gradient norm (math.inf: no clipping)
    runtime: Runtime
    last_good: str  # " (last good checkpoint: ...)" for error messages

    def failure(self, what: str, value: float) -> TrainingError:
        """The error that stops training when `what` ("loss", "gradient norm") is not finite."""
        return TrainingError(f"{what} is {value} at step {self.step + 1}; training stopped{self.last_good}")

    def check_finite(self, what: str, value: float) -> None:
        if not math.isfinite(value):
            raise self.failure(what, value)


Optimisers = torch.optim.Optimizer | Mapping[str, torch.optim.Optimizer]


class Objective(Protocol):
    """One model family's training, built from (cfg, Runtime, data info) by `meddiff.objectives`."""

    format: str  # checkpoint format, a name of meddiff.checkpointing.REGISTRY
    net: nn.Module  # the trained module (raw weights; the loop keeps its EMA copy)
    in_channels: int  # stored in the checkpoint metadata
    precision: str  # "fp32" | "bf16" | "fp16" (the loop's grad scaler is on for fp16)
    log_terms: tuple[str, ...]  # extra columns of the train and val logs

    @staticmethod
    def degradation(cfg: Any) -> Any:
        """The training degradation (meddiff.data.degrade contract) that builds the condition planes."""
        ...

    @staticmethod
    def size_multiple(cfg: Any) -> tuple[int, str] | None:
        """(the multiple training sizes must have, what needs it), or None (any size)."""
        ...

    @staticmethod
    def class_labels(cfg: Any, prepared: Any) -> tuple[Mapping[str, int] | None, list[str]]:
        """Class labels of a prepared folder's slices (case_id -> index) and the class names; (None, []) if none."""
        ...

    @staticmethod
    def describe_data(cfg: Any, train_set: Any, labels: Mapping[str, int] | None, class_names: Any) -> Any:
        """What the family needs to know about the training data before building (checked against
        the config), passed to its constructor (cfg, runtime, data); None if nothing."""
        ...

    def optimisers(self, lr: float, betas: tuple[float, float], weight_decay: float, grad_clip: float) -> Optimisers:
        """The optimiser, or several by name (saved and restored by name)."""
        ...

    def attach(self, ema: nn.Module) -> None:
        """Called once after the EMA copy and the optimisers exist (e.g. to wrap the net for DDP)."""
        ...

    def step(self, ctx: StepContext, batch: Any, opt: Optimisers, scaler: Any) -> tuple[float, dict[str, float]]:
        """One optimiser step on `batch` (the loop has seeded the global RNGs, set the lr and called
        net.train()); returns the loss averaged over ranks and the values of `log_terms`."""
        ...

    def val_batch(self, ema: nn.Module, batch: Any, start: int, seed: int) -> dict[str, float]:
        """Mean validation loss ("total") and `log_terms` of the EMA model on one batch whose first
        item is the `start`-th validation item (noise seeded from (seed, VAL, ...))."""
        ...

    def metadata(self) -> dict[str, str] | None:
        """Extra str -> str keys of the model file (None: none)."""
        ...


class ObjectiveFamily(Protocol):
    """What the training loop receives: a model family's Objective class (the train command picks it with
    `meddiff.objectives.objective_class(cfg)`), so the loop imports no family and no registry."""

    def describe_data(self, cfg: Any, train_set: Any, labels: Mapping[str, int] | None, class_names: Any) -> Any:
        """As Objective.describe_data (a static method of the class)."""
        ...

    def __call__(self, cfg: Any, runtime: Runtime, data: Any) -> Objective:
        """The Objective, its network built on runtime.device (the loop seeds torch first)."""
        ...


class OptionalHooks:
    """The optional members of an Objective, declared once with their defaults (a family overrides what it
    has; nothing looks for them with hasattr): training sets of its own built from the prepared pairs
    (a distilled student: its teacher's outputs), and a TensorBoard grid of samples from its EMA denoiser."""

    sample_grid: bool = False  # whether ema_denoiser(ema) gives a Denoiser to draw TensorBoard sample grids with

    @staticmethod
    def training_sets(cfg: Any, train_set: Any, val_set: Any) -> tuple[Any, Any]:
        """The (train, val) sets the family trains on, from the prepared pairs (default: those pairs)."""
        return train_set, val_set

    def ema_denoiser(self, ema: nn.Module) -> Any:
        """A Denoiser over the EMA network (families with `sample_grid`)."""
        raise NotImplementedError(f"{type(self).__name__} draws no samples (sample_grid is False)")


def optimiser_list(opt: Optimisers) -> list[torch.optim.Optimizer]:
    """The optimisers of `opt` (one, or several by name) in a list."""
    return list(opt.values()) if isinstance(opt, Mapping) else [opt]


class TaskConditioned(OptionalHooks):
    """Defaults shared by the objectives conditioned on the task's degradation (DDPM, baselines):
    no data to describe before building, the task's training degradation."""

    log_terms: tuple[str, ...] = ()

    @staticmethod
    def describe_data(cfg, train_set, labels, class_names) -> None:
        return None  # class labels are a VDM's; nothing to know before building

    @staticmethod
    def degradation(cfg):
        """The training degradation (condition planes of the task)."""
        from ..data.degrade import build_degradation

        return build_degradation(cfg.task, training=True)

    @staticmethod
    def class_labels(cfg, prepared) -> tuple[dict[str, int] | None, list[str]]:
        return None, []  # no class-conditional models among these

