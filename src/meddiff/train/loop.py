"""The training loop of the conditional DDPM (Med-cDiff; Ho et al. 2020, Algorithm 1):

    repeat: (x0, y) ~ data; t ~ U{1..T}; eps ~ N(0, I);
            gradient step on || eps - eps_theta(sqrt(ab_t) x0 + sqrt(1 - ab_t) eps, y, t) ||^2

with AdamW, optional linear warm-up, gradient clipping, an EMA of the weights (used for
sampling), mixed precision, data-parallel ranks (torchrun), exact resume, CSV logs, a loss
plot and atomic checkpoints. Everything random in a step is a function of
(train.seed, step, rank / position) (see `meddiff.train.order`), so an interrupted run
resumed from a checkpoint ends at bitwise the same weights as an uninterrupted one (CPU).

With ``objective: vdm`` the same loop trains a variational diffusion model (meddiff.vdm;
Kingma et al. 2021): the step is ``vdm.model_vlb`` (noise keyed by each example's global position
and one antithetic time offset per step, ``vdm.objective.position_noise``, so 2 ranks draw what one
process with the double batch draws) then ``vdm.backward_vlb`` in place of ``loss.backward()``; the loss is the
negative VLB in bits/dim, logged with its three terms; checkpoints have format
"meddiff-vdm-v1". Under torchrun the VDM is not wrapped in DDP (the VLB calls its parts, not
its forward); its gradients are averaged over the ranks explicitly instead.

With ``objective: baseline`` the same loop trains a learned baseline (meddiff.baselines: pix2pix,
SRGAN, UP-GAN, HPUNet) on the same data and degradations: the step is the baseline's own
``train_step(x0, cond, mask, opts, step)`` (its optimisers, by name, get the lr of every step and
``model.grad_clip``); EMA of the whole module; checkpoints have format "meddiff-baseline-v1";
fp32, one process; the validation loss is the MSE of the EMA model's predictions.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .. import config as config_mod
from ..config import Config
from ..data.degrade import build_degradation
from ..diffusion.denoiser import DDPMDenoiser
from ..diffusion.loss import diffusion_loss
from ..diffusion.schedule import build_schedule
from ..errors import CheckpointError, ConfigError, InputError, TrainingError
from ..nn.unet import build_unet
from . import distributed as D
from .checkpoint import BASELINE_FORMAT, FORMAT, VDM_FORMAT, init_weights, latest_checkpoint, load_train_state, read_config, save_checkpoint
from .ema import ema_copy, ema_update
from .log import TRAIN_FIELDS, VAL_FIELDS, CsvLog, plot_loss, truncate_log, with_tensorboard
from .order import STEP, VAL, SeededItems, StepBatches, collate, loss_noise, mix_seed, seed_global_rngs

# keys that may change when resuming (they do not change what the steps compute)
RESUMABLE_KEYS = ("train.steps", "train.log_every", "train.ckpt_every", "train.keep_last", "train.out_dir", "train.tensorboard",
                  "train.device", "train.threads", "data.num_workers", "sampler.*")
VAL_ITEMS = 32  # validation loss: up to this many evenly spaced items of the val split
VLB_TERMS = ("reconstruction", "latent", "diffusion")  # VDM: logged in bits/dim as <term>_bpd
VDM_TRAIN_FIELDS = (*TRAIN_FIELDS, *(f"{k}_bpd" for k in VLB_TERMS))  # loss = total bits/dim
VDM_VAL_FIELDS = (*VAL_FIELDS, *(f"{k}_bpd" for k in VLB_TERMS))


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


def resolved_precision(precision: str, device: torch.device) -> str:
    """'auto' -> bf16 on CUDA, fp32 elsewhere."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


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


@dataclass(frozen=True)
class VDMData:
    """What a VDM run needs to know about its data: the shape of one example [C, H, W], the class
    index of each case_id (None: unconditional) and the class names (index = label)."""

    data_shape: tuple[int, ...]
    labels: Mapping[str, int] | None = None
    class_names: tuple[str, ...] = ()


def vdm_data(cfg: Config, train_set: Dataset, labels: Mapping[str, int] | None, class_names: Sequence[str]) -> VDMData:
    """VDMData for a run, checking the labels against vdm.n_classes."""
    v = cfg.vdm
    if v.n_classes > 0:
        if labels is None or len(class_names) != v.n_classes:
            raise ConfigError(f"vdm.n_classes is {v.n_classes}: give labels (case_id -> index) and {v.n_classes} class "
                              f"names, got {len(class_names)} names")
        bad = sorted({i for i in labels.values() if not 0 <= i < v.n_classes})
        if bad:
            raise InputError(f"class indices {bad[:5]}: expected 0..{v.n_classes - 1}")
    elif labels is not None:
        raise ConfigError("class labels were given but vdm.n_classes is 0 (unconditional)")
    shape = tuple(int(s) for s in train_set[0].x0.shape)  # type: ignore[index]
    return VDMData(shape, labels if v.n_classes > 0 else None, tuple(class_names))


class _Run:
    """State of one training run (built by `train`); each method is one stage of a step."""

    def __init__(self, cfg: Config, env: D.DistEnv, vdm_data: "VDMData | None" = None):
        self.cfg, self.env = cfg, env
        t = cfg.train
        self.out = Path(t.out_dir)
        self.ckpt_root = self.out / "checkpoints"
        self.vdm = vdm_data
        self.baseline = cfg.objective == "baseline"
        self.fmt = VDM_FORMAT if vdm_data is not None else BASELINE_FORMAT if self.baseline else FORMAT
        self.terms: dict[str, float] = {}  # VDM: bits/dim of the last step's VLB terms
        if vdm_data is not None and not cfg.vdm.image_condition:
            from ..vdm.build import NoCondition
            self.deg = NoCondition()
        else:
            self.deg = build_degradation(cfg.task, training=True)
        self.in_channels = 1 + self.deg.cond_channels
        torch.manual_seed(t.seed)  # identical initial weights on every rank
        if self.baseline:
            if env.distributed:
                raise ConfigError("objective baseline trains in one process (not under torchrun)")
            from ..baselines import build_baseline
            self.in_channels = self.deg.cond_channels  # a baseline sees the condition planes only
            self.net = build_baseline(cfg, self.in_channels).to(env.device)
        elif vdm_data is not None:
            from ..vdm.build import build_vdm
            self.net = build_vdm(cfg, vdm_data.data_shape, self.deg.cond_channels).to(env.device)
        else:
            self.net = build_unet(cfg.model, self.in_channels, 1).to(env.device)
        if t.init_from:
            init_weights(self.net, t.init_from, self.fmt)
        self.ema = ema_copy(self.net)
        if self.baseline:  # named optimisers ({"G": ..., "D": ...}), saved and restored by name
            self.opt = self.net.optimisers(t.lr, t.betas, t.weight_decay)
            self.net.grad_clip = t.grad_clip if t.grad_clip > 0 else math.inf
        else:
            self.opt = torch.optim.AdamW(self.net.parameters(), lr=t.lr, betas=t.betas, weight_decay=t.weight_decay)
        self.precision = "fp32" if vdm_data is not None or self.baseline else resolved_precision(t.precision, env.device)
        self.scaler = torch.amp.GradScaler(env.device.type, enabled=self.precision == "fp16")
        self.start, self.elapsed0 = 0, 0.0
        self.last_ckpt: Path | None = None
        if vdm_data is not None or self.baseline:
            return
        self.sched = build_schedule(cfg.diffusion)
        d = cfg.diffusion
        self.ddp = D.wrap(self.net, env)
        self.denoiser = DDPMDenoiser(self.ddp, self.sched, d.prediction, d.residual, self.precision)
        self.ema_denoiser = DDPMDenoiser(self.ema, self.sched, d.prediction, d.residual, self.precision)

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
        """One optimiser step (0-based `step`); returns the loss averaged over ranks."""
        if self.vdm is not None:
            return self.vdm_step(step, batch)
        if self.baseline:
            return self.baseline_step(step, batch)
        t, env = self.cfg.train, self.env
        x0 = batch.x0.to(env.device)
        cond = self.deg.model_condition(batch.cond, batch.mask).to(env.device)
        k, eps = loss_noise(t.seed, batch.position, self.sched.timesteps, x0.shape[1:])
        seed_global_rngs(mix_seed(t.seed, STEP, step, env.rank))  # dropout etc.
        for g in self.opt.param_groups:
            g["lr"] = train_lr(self.cfg, step)
        self.net.train()
        loss = diffusion_loss(self.denoiser, x0, cond, weighting=self.cfg.diffusion.loss_weight, k=k, eps=eps)
        value = float(D.mean_over_ranks(loss.detach(), env))
        if not math.isfinite(value):
            raise TrainingError(f"loss is {value} at step {step + 1}; training stopped{self._last_good()}")
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.opt)
        clip = t.grad_clip if t.grad_clip > 0 else math.inf
        norm = torch.nn.utils.clip_grad_norm_(self.net.parameters(), clip)
        if not self.scaler.is_enabled() and not torch.isfinite(norm):
            raise TrainingError(f"gradient norm is {float(norm)} at step {step + 1}; training stopped{self._last_good()}")
        self.scaler.step(self.opt)
        self.scaler.update()
        ema_update(self.ema, self.net, t.ema_decay)
        return value

    def baseline_step(self, step: int, batch) -> float:
        """One step of a learned baseline: its own train_step (all its updates) with this step's lr
        on every optimiser and torch's RNGs seeded from (seed, step) (dropout etc.); returns "loss"."""
        t, env = self.cfg.train, self.env
        x0, mask = batch.x0.to(env.device), batch.mask.to(env.device)
        cond = self.deg.model_condition(batch.cond, batch.mask).to(env.device)
        seed_global_rngs(mix_seed(t.seed, STEP, step, env.rank))
        for opt in self.opt.values():
            for g in opt.param_groups:
                g["lr"] = train_lr(self.cfg, step)
        self.net.train()
        losses = self.net.train_step(x0, cond, mask, self.opt, step)
        value = float(losses["loss"])
        if not math.isfinite(value):
            raise TrainingError(f"loss is {value} at step {step + 1}; training stopped{self._last_good()}")
        ema_update(self.ema, self.net, t.ema_decay)
        return value

    def vdm_inputs(self, batch) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(integer levels x, class labels or None, condition planes or None) of a batch, on the device."""
        from ..vdm.networks import to_levels

        assert self.vdm is not None
        dev = self.env.device
        x = to_levels(batch.x0, self.cfg.vdm.vocab_size).to(dev)
        labels = None
        if self.vdm.labels is not None:
            try:
                labels = torch.tensor([self.vdm.labels[c] for c in batch.case_id], dtype=torch.long, device=dev)
            except KeyError as e:
                raise InputError(f"no class label for slice {e.args[0]!r}") from None
        cond = self.deg.model_condition(batch.cond, batch.mask).to(dev) if self.cfg.vdm.image_condition else None
        return x, labels, cond

    def vdm_step(self, step: int, batch) -> float:
        """One VDM step: model_vlb then backward_vlb (right after zero_grad: it sets the schedule
        shape parameters' gradients, so gradients must not be accumulated across calls); returns
        the total bits/dim averaged over ranks and keeps the terms in self.terms."""
        from ..vdm import backward_vlb, model_vlb
        from ..vdm.build import latent_shape
        from ..vdm.objective import position_noise

        t, v, env = self.cfg.train, self.cfg.vdm, self.env
        x, labels, cond = self.vdm_inputs(batch)
        # noise keyed by global position, one antithetic offset per step: independent of the rank split
        f_shape = (x.shape[0], *latent_shape(self.cfg, self.vdm.data_shape))  # shape of the encoder output f
        noise = position_noise(t.seed, step, batch.position, t.batch_size * env.world_size, f_shape, v.antithetic)
        seed_global_rngs(mix_seed(t.seed, STEP, step, env.rank))  # dropout etc.
        for g in self.opt.param_groups:
            g["lr"] = train_lr(self.cfg, step)
        self.net.train()
        self.opt.zero_grad(set_to_none=True)
        terms = model_vlb(self.net, x, labels=labels, image_cond=cond, noise=noise, timesteps=v.timesteps)
        bpd = backward_vlb(terms, self.net.gamma)
        means = {k: float(D.mean_over_ranks(bpd[k], env)) for k in (*VLB_TERMS, "total")}
        value = means.pop("total")
        if not math.isfinite(value):
            raise TrainingError(f"loss is {value} at step {step + 1}; training stopped{self._last_good()}")
        self.terms = means
        if env.distributed:  # not DDP-wrapped: average the gradients (the VLB and the variance term alike)
            for p in self.net.parameters():
                if p.grad is not None:
                    p.grad.copy_(D.mean_over_ranks(p.grad, env))
        clip = t.grad_clip if t.grad_clip > 0 else math.inf
        norm = torch.nn.utils.clip_grad_norm_(self.net.parameters(), clip)
        if not torch.isfinite(norm):
            raise TrainingError(f"gradient norm is {float(norm)} at step {step + 1}; training stopped{self._last_good()}")
        self.opt.step()
        ema_update(self.ema, self.net, t.ema_decay)
        return value

    @torch.no_grad()
    def vdm_val(self, val_set: Dataset) -> dict[str, float]:
        """Negative VLB (bits/dim, total and terms) of the EMA model on up to VAL_ITEMS evenly spaced
        val items, noise from (seed, VAL, batch start)."""
        from ..vdm import model_vlb

        n = len(val_set)  # type: ignore[arg-type]
        idx = sorted({round(i * (n - 1) / max(1, VAL_ITEMS - 1)) for i in range(min(n, VAL_ITEMS))})
        items = SeededItems(val_set, mix_seed(self.cfg.train.seed, VAL))
        sums = dict.fromkeys((*VLB_TERMS, "total"), 0.0)
        bs, v = self.cfg.train.batch_size, self.cfg.vdm
        for s in range(0, len(idx), bs):
            b = collate([items[(i, i)] for i in idx[s: s + bs]])
            x, labels, cond = self.vdm_inputs(b)
            g = torch.Generator().manual_seed(mix_seed(self.cfg.train.seed, VAL, s))
            terms = model_vlb(self.ema, x, labels=labels, image_cond=cond, generator=g, timesteps=v.timesteps,
                              antithetic=v.antithetic)
            for k, val in terms.bpd().items():
                sums[k] += float(val) * len(b.case_id)
        return {k: val / max(len(idx), 1) for k, val in sums.items()}

    def _last_good(self) -> str:
        return f" (last good checkpoint: {self.last_ckpt})" if self.last_ckpt else " (no checkpoint was written yet)"

    # ---------------------------------------------------------------- validation / checkpoint
    @torch.no_grad()
    def val_loss(self, val_set: Dataset) -> float:
        """Loss of the EMA weights on up to VAL_ITEMS evenly spaced val items, fixed noise."""
        n = len(val_set)  # type: ignore[arg-type]
        idx = sorted({round(i * (n - 1) / max(1, VAL_ITEMS - 1)) for i in range(min(n, VAL_ITEMS))})
        items = SeededItems(val_set, mix_seed(self.cfg.train.seed, VAL))
        total, count = 0.0, 0
        for s in range(0, len(idx), self.cfg.train.batch_size):
            b = collate([items[(i, i)] for i in idx[s: s + self.cfg.train.batch_size]])
            x0 = b.x0.to(self.env.device)
            cond = self.deg.model_condition(b.cond, b.mask).to(self.env.device)
            if self.baseline:  # MSE of the EMA model's prediction (noise from (seed, VAL, batch start))
                g = torch.Generator().manual_seed(mix_seed(self.cfg.train.seed, VAL, s))
                pred = self.ema.predict(cond, b.mask.to(self.env.device), g)
                total, count = total + float((pred - x0).square().mean()) * len(b.case_id), count + len(b.case_id)
                continue
            k, eps = loss_noise(self.cfg.train.seed, b.position, self.sched.timesteps, x0.shape[1:], stream=VAL)
            loss = diffusion_loss(self.ema_denoiser, x0, cond, weighting=self.cfg.diffusion.loss_weight, k=k, eps=eps)
            total, count = total + float(loss) * len(b.case_id), count + len(b.case_id)
        return total / max(count, 1)

    def save(self, done: int, elapsed: float) -> Path:
        for p in self.ema.parameters():
            if not torch.isfinite(p).all():
                raise TrainingError(f"EMA weights are not finite at step {done}; not saving{self._last_good()}")
        extra = None
        if self.vdm is not None:
            from ..vdm.checkpoint import vdm_metadata
            extra = vdm_metadata(self.cfg, self.vdm.data_shape, self.vdm.class_names, self.deg.cond_channels)
        self.last_ckpt = save_checkpoint(
            self.ckpt_root, done, self.cfg, self.net, self.ema, self.opt, self.scaler, elapsed_s=elapsed,
            in_channels=self.in_channels, out_channels=1, keep_last=self.cfg.train.keep_last,
            fmt=self.fmt, extra_metadata=extra,
        )
        return self.last_ckpt


def _loader(cfg: Config, env: D.DistEnv, dataset: Dataset, start: int) -> DataLoader:
    t = cfg.train
    sampler = StepBatches(len(dataset), t.seed, t.batch_size, env.rank, env.world_size, start, t.steps)  # type: ignore[arg-type]
    return DataLoader(SeededItems(dataset, t.seed), batch_sampler=sampler, collate_fn=collate,
                      num_workers=cfg.data.num_workers, persistent_workers=False)


def train(cfg: Config, train_set: Dataset, *, val_set: Dataset | None = None, resume: bool = False,
          progress: bool = True, labels: Mapping[str, int] | None = None, class_names: Sequence[str] = ()) -> TrainResult:
    """Train the model `cfg` describes on `train_set` (a Dataset of Pair(x0, cond, mask, case_id),
    [1, H, W] tensors in [-1, 1]) for cfg.train.steps optimiser steps in total.

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
    vdm = vdm_data(cfg, train_set, labels, class_names) if cfg.objective == "vdm" else None
    env = D.setup(cfg.train.device)
    try:
        return _train(cfg, env, train_set, val_set, resume, progress, vdm)
    finally:
        D.cleanup(env)


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


def _train(cfg: Config, env: D.DistEnv, train_set: Dataset, val_set: Dataset | None, resume: bool, progress: bool,
           vdm: VDMData | None = None) -> TrainResult:
    t = cfg.train
    run = _Run(cfg, env) if vdm is None else _Run(cfg, env, vdm)  # the DDPM call as before (tests hook _Run(cfg, env))
    log_path, val_path = _prepare_out(run, resume)
    plot_path = run.out / "loss.png"
    train_fields, val_fields = (VDM_TRAIN_FIELDS, VDM_VAL_FIELDS) if vdm is not None else (TRAIN_FIELDS, VAL_FIELDS)
    tb = run.out / "tensorboard" if t.tensorboard else None
    log = with_tensorboard(CsvLog(log_path, train_fields), tb, "train") if env.is_main else None
    vlog = with_tensorboard(CsvLog(val_path, val_fields), tb, "val") if env.is_main and val_set is not None else None
    win_terms = dict.fromkeys(VLB_TERMS, 0.0)
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
                    extra = {f"{k}_bpd": win_terms[k] / win_n for k in VLB_TERMS} if vdm is not None else {}
                    log.write(step=done, loss=last_loss, lr=train_lr(cfg, step), images_per_s=ips, elapsed_s=elapsed, **extra)
                win_loss, win_n, win_t = 0.0, 0, 0.0
                win_terms = dict.fromkeys(VLB_TERMS, 0.0)
            if done % t.ckpt_every == 0 or done == t.steps:
                D.barrier(env)
                if env.is_main:
                    if vlog is not None and vdm is not None:
                        val = run.vdm_val(val_set)  # type: ignore[arg-type]
                        vlog.write(step=done, val_loss=val["total"], **{f"{k}_bpd": val[k] for k in VLB_TERMS})
                    elif vlog is not None:
                        vlog.write(step=done, val_loss=run.val_loss(val_set))
                        if hasattr(vlog, "writer") and not run.baseline:  # train.tensorboard: a sample grid too
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
