"""The training loop of every model family: optional linear warm-up, gradient clipping, an EMA of
the weights (used for
sampling), mixed precision, data-parallel ranks (torchrun), exact resume, CSV logs, a loss
plot and atomic checkpoints. Everything random in a step is a function of
(train.seed, step, rank / position) (see `meddiff.data.order`), so an interrupted run
resumed from a checkpoint ends at bitwise the same weights as an uninterrupted one (CPU).

The model family (the conditional DDPM, ``objective: vdm`` a variational diffusion model,
``objective: baseline`` a learned baseline) is an `meddiff.objectives.protocol.Objective`; its class (the
`family`) is chosen by the caller (`meddiff train`: `meddiff.objectives.objective_class(cfg)`) and
passed in: it builds the network and optimiser(s), computes each step and the validation loss and
names its checkpoint format; this loop imports no model family and never asks which one it trains.
"""

from __future__ import annotations

import math
import warnings
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .. import config as config_mod
from ..checkpointing import init_weights, latest_checkpoint, load_train_state, read_config, save_checkpoint
from ..config import Config
from ..data.order import STEP, VAL, SeededItems, StepBatches, collate, mix_seed, seed_global_rngs
from ..errors import CheckpointError, ConfigError, InputError, TrainingError
from ..objectives.protocol import ObjectiveFamily, Runtime, StepContext, optimiser_list
from . import distributed as D
from ..checkpointing.ema import EMAWarning, ema_decay_at, init_share_warning
from .ema import ema_copy, ema_update
from .log import TRAIN_FIELDS, VAL_FIELDS, CsvLog, plot_loss, truncate_log, with_tensorboard

# keys that may change when resuming (they do not change what the steps compute)
RESUMABLE_KEYS = ("train.steps", "train.log_every", "train.ckpt_every", "train.keep_last", "train.out_dir", "train.tensorboard",
                  "train.device", "train.threads", "data.num_workers", "sampler.*")
VAL_ITEMS = 32  # validation loss: up to this many evenly spaced items of the val split


@dataclass(frozen=True)
class TrainResult:
    out_dir: Path
    checkpoint: Path | None  # the last checkpoint written (or resumed from)
    step: int  # optimiser steps done
    loss: float | None  # mean training loss of the last log window
    log: Path  # OUT_DIR/train_log.csv
    val_log: Path  # OUT_DIR/val_log.csv (only if a validation set was given)
    plot: Path  # OUT_DIR/loss.png


def lr_at(step: int, lr: float, warmup_steps: int, schedule: str = "constant", decay_steps: int = 0,
          lr_min: float = 0.0) -> float:
    """Learning rate of (0-based) step: linear warm-up from lr/warmup to lr, then constant, or
    (schedule "cosine", Loshchilov and Hutter 2017, as Medical VDM) decayed over the steps
    warmup .. decay_steps as lr_min + (lr - lr_min) (1 + cos(pi p)) / 2, p = (step - warmup) /
    (decay_steps - warmup) clipped to [0, 1] (lr_min from decay_steps on)."""
    if warmup_steps > 0 and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "cosine":
        p = min(max((step - warmup_steps) / max(decay_steps - warmup_steps, 1), 0.0), 1.0)
        return lr_min + (lr - lr_min) * 0.5 * (1.0 + math.cos(math.pi * p))
    return lr


def train_lr(cfg: Config, step: int) -> float:
    """lr_at with the train section's settings (cosine decay ends at lr_decay_steps, or train.steps if 0)."""
    t = cfg.train
    return lr_at(step, t.lr, t.warmup_steps, t.lr_schedule, t.lr_decay_steps or t.steps, t.lr_min)


def check_train_config(cfg: Config) -> None:
    """Values of the train section the loop cannot use raise ConfigError naming the key."""
    t = cfg.train
    rules = [
        ("lr", t.lr > 0, "> 0"), ("log_every", t.log_every >= 1, ">= 1"), ("ckpt_every", t.ckpt_every >= 1, ">= 1"),
        ("keep_last", t.keep_last >= 0, ">= 0 (0 keeps all)"), ("warmup_steps", t.warmup_steps >= 0, ">= 0"),
        ("ema_decay", 0.0 <= t.ema_decay <= 1.0, "in [0, 1]"), ("grad_clip", t.grad_clip >= 0, ">= 0 (0 = no clipping)"),
        ("weight_decay", t.weight_decay >= 0, ">= 0"), ("threads", t.threads >= 0, ">= 0 (0 = torch default)"),
        ("betas", all(0.0 <= b < 1.0 for b in t.betas), "two values in [0, 1)"),
    ]
    for key, ok, expected in rules:
        if not ok:
            raise ConfigError(f"train.{key}: expected {expected}, got {getattr(t, key)!r}")


def config_differences(old: Config, new: Config) -> list[str]:
    """'section.key (old -> new)' for keys that differ, except RESUMABLE_KEYS (train.steps is not
    resumable under a cosine decay that ends at train.steps: it would change every later lr)."""
    a, b = config_mod.to_dict(old), config_mod.to_dict(new)
    fixed_end = old.train.lr_schedule == "cosine" and old.train.lr_decay_steps == 0
    out = []
    for sec in a:
        if not isinstance(a[sec], dict):  # top-level scalars (objective)
            if a[sec] != b[sec]:
                out.append(f"{sec} ({a[sec]!r} in the checkpoint, {b[sec]!r} now)")
            continue
        for key in a[sec]:
            name = f"{sec}.{key}"
            if (name in RESUMABLE_KEYS or f"{sec}.*" in RESUMABLE_KEYS) and not (fixed_end and name == "train.steps"):
                continue
            if a[sec][key] != b[sec][key]:
                why = "; the cosine decay ends at train.steps: set train.lr_decay_steps" if name == "train.steps" else ""
                out.append(f"{name} ({a[sec][key]!r} in the checkpoint, {b[sec][key]!r} now{why})")
    return out


class _Run:
    """State of one training run (built by `train`); each method is one stage of a step. The model
    family is an `Objective` built from the `family` passed in: this class never asks which one."""

    def __init__(self, cfg: Config, env: D.DistEnv, family: ObjectiveFamily, data: object = None):
        self.cfg, self.env = cfg, env
        t = cfg.train
        self.out = Path(t.out_dir)
        self.ckpt_root = self.out / "checkpoints"
        self.terms: dict[str, float] = {}  # the objective's logged terms of the last step
        self.runtime = Runtime(env.device, env.rank, env.world_size, lambda m: D.wrap(m, env),
                               lambda v: D.mean_over_ranks(v, env))
        torch.manual_seed(t.seed)  # identical initial weights on every rank
        self.objective = family(cfg, self.runtime, data)  # its network built on runtime.device
        self.net, self.fmt, self.in_channels = self.objective.net, self.objective.format, self.objective.in_channels
        if t.init_from:
            init_weights(self.net, t.init_from, self.fmt)
        self.ema = ema_copy(self.net)
        self.opt = self.objective.optimisers(t.lr, t.betas, t.weight_decay, t.grad_clip)
        self.precision = self.objective.precision
        self.scaler = torch.amp.GradScaler(env.device.type, enabled=self.precision == "fp16")
        self.start, self.elapsed0 = 0, 0.0
        self.last_ckpt: Path | None = None
        self.objective.attach(self.ema)

    # ---------------------------------------------------------------- resume
    def resume(self) -> None:
        ck = latest_checkpoint(self.ckpt_root)
        if ck is None:
            raise CheckpointError(f"cannot resume: no checkpoint in {self.ckpt_root} (no 'latest' file)")
        diffs = config_differences(read_config(ck), self.cfg)
        if diffs:
            raise CheckpointError(
                f"cannot resume from {ck} with a different config: {'; '.join(diffs)} "
                f"(only {', '.join(RESUMABLE_KEYS)} may change)"
            )
        st = load_train_state(ck, self.net, self.ema, self.opt, self.scaler, fmt=self.fmt)
        self.start, self.elapsed0, self.last_ckpt = st.step, st.elapsed_s, ck

    # ---------------------------------------------------------------- one step
    def step(self, step: int, batch) -> float:
        """One optimiser step (0-based `step`): global RNGs seeded from (seed, step, rank) (dropout
        etc.), this step's lr on every optimiser, the objective's step, the EMA update; returns the
        loss averaged over ranks (the objective's logged terms are kept in self.terms)."""
        t, env = self.cfg.train, self.env
        seed_global_rngs(mix_seed(t.seed, STEP, step, env.rank))
        for opt in optimiser_list(self.opt):
            for g in opt.param_groups:  # a group may run at a multiple of the schedule (its "lr_scale")
                g["lr"] = train_lr(self.cfg, step) * g.get("lr_scale", 1.0)
        self.net.train()
        ctx = StepContext(step, t.seed, t.batch_size, t.grad_clip if t.grad_clip > 0 else math.inf, self.runtime,
                          self._last_good())
        value, self.terms = self.objective.step(ctx, batch, self.opt, self.scaler)
        ema_update(self.ema, self.net, ema_decay_at(step, t.ema_decay, t.ema_warmup))
        return value

    def _last_good(self) -> str:
        return f" (last good checkpoint: {self.last_ckpt})" if self.last_ckpt else " (no checkpoint was written yet)"

    # ---------------------------------------------------------------- validation / checkpoint
    @torch.no_grad()
    def validate(self, val_set: Dataset) -> dict[str, float]:
        """The objective's validation loss ("total") and logged terms of the EMA weights on up to
        VAL_ITEMS evenly spaced val items, fixed noise."""
        n = len(val_set)  # type: ignore[arg-type]
        idx = sorted({round(i * (n - 1) / max(1, VAL_ITEMS - 1)) for i in range(min(n, VAL_ITEMS))})
        items = SeededItems(val_set, mix_seed(self.cfg.train.seed, VAL))
        sums = dict.fromkeys(("total", *self.objective.log_terms), 0.0)
        bs = self.cfg.train.batch_size
        for s in range(0, len(idx), bs):
            b = collate([items[(i, i)] for i in idx[s: s + bs]])
            for k, v in self.objective.val_batch(self.ema, b, s, self.cfg.train.seed).items():
                sums[k] += v * len(b.case_id)
        return {k: v / max(len(idx), 1) for k, v in sums.items()}

    def val_loss(self, val_set: Dataset) -> float:
        """The validation loss alone (validate()["total"])."""
        return self.validate(val_set)["total"]

    def save(self, done: int, elapsed: float) -> Path:
        for p in self.ema.parameters():
            if not torch.isfinite(p).all():
                raise TrainingError(f"EMA weights are not finite at step {done}; not saving{self._last_good()}")
        self.last_ckpt = save_checkpoint(
            self.ckpt_root, done, self.cfg, self.net, self.ema, self.opt, self.scaler, elapsed_s=elapsed,
            in_channels=self.in_channels, out_channels=1, keep_last=self.cfg.train.keep_last,
            fmt=self.fmt, extra_metadata=self.objective.metadata(),
        )
        return self.last_ckpt


def _loader(cfg: Config, env: D.DistEnv, dataset: Dataset, start: int) -> DataLoader:
    t = cfg.train
    sampler = StepBatches(len(dataset), t.seed, t.batch_size, env.rank, env.world_size, start, t.steps)  # type: ignore[arg-type]
    return DataLoader(SeededItems(dataset, t.seed), batch_sampler=sampler, collate_fn=collate,
                      num_workers=cfg.data.num_workers, persistent_workers=False)


def train(cfg: Config, train_set: Dataset, *, family: ObjectiveFamily, val_set: Dataset | None = None,
          resume: bool = False, progress: bool = True, labels: Mapping[str, int] | None = None,
          class_names: Sequence[str] = ()) -> TrainResult:
    """Train the model `cfg` describes, of the model family `family` (the Objective class of
    cfg.objective: `meddiff.objectives.objective_class(cfg)`), on `train_set` (a Dataset of
    Pair(x0, cond, mask, case_id), [1, H, W] tensors in [-1, 1]) for cfg.train.steps optimiser steps in total.

    Writes to cfg.train.out_dir (rank 0 only): checkpoints/, train_log.csv, val_log.csv, loss.png.
    resume: continue from checkpoints/latest (same config except RESUMABLE_KEYS). Under torchrun
    each rank must be given the same dataset; cfg.train.batch_size is per rank.
    Raises TrainingError if the loss becomes NaN/inf (the last checkpoint is kept).
    cfg.objective "vdm": a variational diffusion model on the integer levels of x0 (the loss is
    the negative VLB in bits/dim); labels maps each case_id to its class index and class_names
    names them (class-conditional models, vdm.n_classes > 0).
    """
    check_train_config(cfg)
    if len(train_set) == 0:  # type: ignore[arg-type]
        raise InputError("the training set is empty")
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    data = family.describe_data(cfg, train_set, labels, class_names)
    env = D.setup(cfg.train.device)
    try:
        result = _train(cfg, env, family, train_set, val_set, resume, progress, data)
    finally:
        D.cleanup(env)
    warning = init_share_warning(result.step, cfg.train.ema_decay, cfg.train.ema_warmup)
    if warning and env.is_main:
        warnings.warn(warning, EMAWarning, stacklevel=2)
    return result


def _prepare_out(run: _Run, resume: bool) -> tuple[Path, Path]:
    log_path, val_path = run.out / "train_log.csv", run.out / "val_log.csv"
    if resume:
        run.resume()
        if run.env.is_main:
            truncate_log(log_path, run.start)
            truncate_log(val_path, run.start)
    elif latest_checkpoint(run.ckpt_root) is not None:
        raise CheckpointError(f"{run.ckpt_root} already holds checkpoints: pass --resume to continue, or choose another --out")
    elif run.env.is_main:
        for p in (log_path, val_path):
            p.unlink(missing_ok=True)
    return log_path, val_path


def _train(cfg: Config, env: D.DistEnv, family: ObjectiveFamily, train_set: Dataset, val_set: Dataset | None,
           resume: bool, progress: bool, data: object = None) -> TrainResult:
    t = cfg.train
    run = _Run(cfg, env, family, data)
    log_path, val_path = _prepare_out(run, resume)
    plot_path = run.out / "loss.png"
    terms = run.objective.log_terms  # the objective's extra log columns (a VDM's VLB terms in bits/dim)
    train_fields, val_fields = (*TRAIN_FIELDS, *terms), (*VAL_FIELDS, *terms)
    tb = run.out / "tensorboard" if t.tensorboard else None
    log = with_tensorboard(CsvLog(log_path, train_fields), tb, "train") if env.is_main else None
    vlog = with_tensorboard(CsvLog(val_path, val_fields), tb, "val") if env.is_main and val_set is not None else None
    win_terms = dict.fromkeys(terms, 0.0)
    bar = tqdm(total=t.steps, initial=run.start, disable=not (progress and env.is_main), unit="step", dynamic_ncols=True)
    t0 = tick = time.perf_counter()
    win_loss, win_n, win_t = 0.0, 0, 0.0  # log window: loss sum, steps, seconds in steps (not saving)
    last_loss = None
    try:
        for step, batch in zip(range(run.start, t.steps), _loader(cfg, env, train_set, run.start)):
            value = run.step(step, batch)
            done = step + 1
            now = time.perf_counter()
            win_loss, win_n, win_t = win_loss + value, win_n + 1, win_t + now - tick
            for k in run.terms:
                win_terms[k] += run.terms[k]
            tick = now
            elapsed = run.elapsed0 + now - t0
            ips = win_n * t.batch_size * env.world_size / max(win_t, 1e-9)  # images per second, all ranks
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4f}", img_s=f"{ips:.1f}", refresh=False)
            if done % t.log_every == 0 or done == t.steps:
                last_loss = win_loss / win_n
                if log is not None:
                    extra = {k: win_terms[k] / win_n for k in terms}
                    log.write(step=done, loss=last_loss, lr=train_lr(cfg, step), images_per_s=ips, elapsed_s=elapsed, **extra)
                win_loss, win_n, win_t = 0.0, 0, 0.0
                win_terms = dict.fromkeys(terms, 0.0)
            if done % t.ckpt_every == 0 or done == t.steps:
                D.barrier(env)
                if env.is_main:
                    if vlog is not None:
                        val = run.validate(val_set)  # type: ignore[arg-type]
                        vlog.write(step=done, val_loss=val["total"], **{k: val[k] for k in terms})
                        if hasattr(vlog, "writer"):  # train.tensorboard: a sample grid too (objectives that sample)
                            from .tensorboard import log_sample_grid
                            log_sample_grid(vlog.writer, run, val_set, done)
                    run.save(done, elapsed)
                    plot_loss(log_path, plot_path, val_path if val_set is not None else None)
                D.barrier(env)
            tick = time.perf_counter()  # the next step's time includes loading its batch
    finally:
        bar.close()
        for lg in (log, vlog):
            if lg is not None:
                lg.close()
    if env.is_main and not plot_path.exists():
        plot_loss(log_path, plot_path, val_path if val_set is not None else None)
    return TrainResult(run.out, run.last_ckpt, max(run.start, t.steps), last_loss, log_path, val_path, plot_path)
