"""Knowledge distillation of a DDPM's sampler into a one-call student (``objective: distill``).

Luhman & Luhman (2021), "Knowledge distillation in iterative generative models", as SinSR (Wang et
al. 2024) for super-resolution: the teacher's deterministic sampler (DPM-Solver++ or DDIM with
eta 0, an ODE solver) is a function x_T -> x0*(x_T, y). The student f_theta, the teacher's network
started from the teacher's weights, is trained to compute it in one call at the chain's first time
T (x_T is pure noise there):

    L = E_{(y, x_T)} || f_theta(x_T, T, y) - z0*(x_T, y) ||^2,   z0* = x0* - base(y)  (the diffused space)

The targets are precomputed once (meddiff.distill.targets); sampling the student is
`meddiff.samplers.student`. Checkpoints have the DDPM format, so every DDPM loader reads them;
their config has objective "distill" and sampler "student", which `meddiff sample` then uses.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from .. import config as config_mod
from ..config import Config
from ..diffusion.checkpoint import load_model
from ..diffusion.denoiser import DDPMDenoiser
from .ddpm import DDPMObjective
from ..errors import ConfigError
from ..io.provenance import file_sha256
from .protocol import Runtime, StepContext
from ..distill.targets import DistilledPairs, build_targets, item_seed, settings_key, teacher_targets, train_item, val_item

log = logging.getLogger(__name__)
SAME_AS_TEACHER = ("task", "model", "diffusion")  # config sections a student must share with its teacher


@dataclass(frozen=True)
class Teacher:
    file: Path
    sha256: str
    denoiser: DDPMDenoiser


def load_teacher(cfg: Config, device: torch.device | str = "cpu") -> Teacher:
    """The teacher of cfg.distill.teacher (a path or named model) in fp32, eval mode; ConfigError if the
    student's task, model or diffusion section differs from the teacher's (naming the keys)."""
    from ..checkpointing import resolve_model_file
    from ..checkpointing.named import resolve_checkpoint

    file = resolve_model_file(resolve_checkpoint(cfg.distill.teacher))
    tcfg, _, denoiser = load_model(file, device=device, precision="fp32")
    diffs = [f"{sec}.{k} ({v!r} in the teacher, {getattr(getattr(cfg, sec), k)!r} here)"
             for sec in SAME_AS_TEACHER for k, v in config_mod.to_dict(getattr(tcfg, sec)).items()
             if config_mod.to_dict(getattr(cfg, sec))[k] != v]
    if diffs:
        raise ConfigError(f"distill.teacher {file}: the student must have the teacher's task, model and diffusion "
                          f"sections; differs in {'; '.join(diffs)}")
    return Teacher(file, file_sha256(file), denoiser)


def cache_path(cfg: Config, split: str) -> Path:
    """Where the targets of `split` are kept: distill.cache (default OUT/distill_targets.safetensors); val: *_val."""
    p = Path(cfg.distill.cache) if cfg.distill.cache else Path(cfg.train.out_dir) / "distill_targets.safetensors"
    return p if split == "train" else p.with_name(p.stem + "_val" + p.suffix)


def distilled_sets(cfg: Config, train_set, val_set, progress: bool = True) -> tuple[DistilledPairs, DistilledPairs | None]:
    """The teacher's targets on distill.items training pairs and distill.val_items val items (computed
    once, kept in cache_path): the student's training and validation sets."""
    if cfg.train.threads > 0:  # before the training loop sets them: the targets cost more than the training
        torch.set_num_threads(cfg.train.threads)
    teacher = load_teacher(cfg)
    d, deg = cfg.distill, DDPMObjective.degradation(cfg)

    def planes_of(pair) -> Tensor:
        return deg.model_condition(pair.cond[None], pair.mask[None])[0]

    def build(split: str, count: int, item) -> DistilledPairs:
        key = settings_key(cfg, teacher.sha256, split)

        def make(planes: Tensor, seeds: list[int]) -> tuple[Tensor, Tensor]:
            return teacher_targets(teacher.denoiser, planes, seeds, d.sampler, d.steps, d.grid)

        t = build_targets(cache_path(cfg, split), key, count, item, planes_of, make,
                          lambda i: item_seed(cfg.train.seed, split, i), d.batch_size, progress)
        return DistilledPairs(t["planes"], t["noise"], t["target"])

    train = build("train", d.items, train_item(train_set, cfg.train.seed))
    val = None
    if val_set is not None and d.val_items > 0:
        n = min(d.val_items, len(val_set))
        val = build("val", n, val_item(val_set, n))
    return train, val


def split_noise(cond: Tensor) -> tuple[Tensor, Tensor]:
    """A DistilledPairs batch's cond [B, C_cond + 1, H, W] -> (condition planes, x_T [B, 1, H, W])."""
    return cond[:, :-1], cond[:, -1:]


def student_loss(student: DDPMDenoiser, x_T: Tensor, planes: Tensor, target: Tensor) -> Tensor:
    """|| f(x_T, T, y) - (target - base(y)) ||^2, mean over pixels and batch (x0 estimates in the diffused space)."""
    k = torch.full((x_T.shape[0],), student.sched.timesteps - 1, dtype=torch.long, device=x_T.device)
    z0 = student(x_T, k, planes)
    return torch.mean((z0 - student.to_diffused(target, planes)) ** 2)


class DistillObjective(DDPMObjective):
    """The one-call student of cfg.distill.teacher (its network, started from the teacher's weights)."""

    sample_grid = False  # no TensorBoard sample grid: its val pairs carry x_T as a condition plane

    @staticmethod
    def training_sets(cfg: Config, train_set, val_set):
        """The teacher's targets replace the training pairs (meddiff.objectives.training_data)."""
        return distilled_sets(cfg, train_set, val_set)

    def __init__(self, cfg: Config, runtime: Runtime, data: object = None):
        super().__init__(cfg, runtime, data)
        self.teacher = load_teacher(cfg, runtime.device)
        self.net.load_state_dict(self.teacher.denoiser.net.state_dict())  # the student starts as the teacher

    def step(self, ctx: StepContext, batch, opt, scaler) -> tuple[float, dict[str, float]]:
        dev = self.runtime.device
        planes, x_T = split_noise(batch.cond.to(dev))
        loss = student_loss(self.denoiser, x_T, planes, batch.x0.to(dev))
        return self.optimise(ctx, loss, opt, scaler), {}

    def val_batch(self, ema: nn.Module, batch, start: int, seed: int) -> dict[str, float]:
        planes, x_T = split_noise(batch.cond.to(self.runtime.device))
        return {"total": float(student_loss(self.ema_denoiser(ema), x_T, planes, batch.x0.to(self.runtime.device)))}

    def metadata(self) -> dict[str, str] | None:
        d = self.cfg.distill
        return {"distill_teacher": str(d.teacher), "distill_teacher_sha256": self.teacher.sha256,
                "distill_teacher_sampler": f"{d.sampler} {d.steps} steps"}
