"""`VDMObjective`, the VDM under meddiff's training loop (meddiff.objectives.protocol.Objective); the VLB
of one batch (`model_vlb`, `position_noise`) is meddiff.vdm.vlb's.

Under `meddiff train` with ``objective: vdm`` (Kingma et al. 2021): the step is ``model_vlb`` (noise
keyed by each example's global position and one antithetic time offset per step, `position_noise`,
so 2 ranks draw what one process with the double batch draws) then ``backward_vlb`` in place of
``loss.backward()``; the loss is the negative VLB in bits/dim, logged with its three terms;
checkpoints have format "meddiff-vdm-v1". With vdm.label_dropout p > 0 (classifier-free guidance) the
score network of each example sees "no class" with probability p, decided by its global position
(`label_drop`); validation never drops. Under torchrun the VDM is not wrapped in DDP (the VLB
calls its parts, not its forward); its gradients are averaged over the ranks explicitly instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..checkpointing import VDM
from ..checkpointing.folders import CONDITIONING
from ..config import Config
from ..data.degrade import build_degradation
from ..data.order import VAL, mix_seed
from ..data.split import SPLITS
from ..errors import ConfigError, InputError
from ..vdm.build import NoCondition, build_vdm, case_labels, label_indices, latent_shape
from ..vdm.build import class_names as sorted_class_names
from ..vdm.checkpoint import vdm_metadata
from ..vdm.loss import backward_vlb
from ..vdm.networks import to_levels
from ..vdm.vlb import VLB_TERMS, label_drop, model_vlb, position_noise
from .protocol import OptionalHooks, Runtime, StepContext


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


class VDMObjective(OptionalHooks):
    """The VDM under meddiff's training loop (module docstring); fp32, AdamW over all parameters
    (gamma's included)."""

    format = VDM.name
    log_terms = tuple(f"{k}_bpd" for k in VLB_TERMS)
    precision = "fp32"

    @staticmethod
    def describe_data(cfg: Config, train_set: Dataset, labels: Mapping[str, int] | None,
                      class_names: Sequence[str]) -> VDMData:
        return vdm_data(cfg, train_set, labels, class_names)

    @staticmethod
    def degradation(cfg: Config):
        """NoCondition for generation; the task's training degradation for an image-conditional VDM."""
        return NoCondition() if not cfg.vdm.image_condition else build_degradation(cfg.task, training=True)

    @staticmethod
    def size_multiple(cfg: Config) -> tuple[int, str] | None:
        """(the multiple training sizes must have, what needs it) of a U-Net score network; None for the
        dense ScoreNet (fixed to the data shape)."""
        if cfg.vdm.score != "unet":
            return None
        return 2 ** (len(cfg.model.channels) - 1), f"a U-Net with {len(cfg.model.channels)} levels"

    @staticmethod
    def class_labels(cfg: Config, prepared) -> tuple[dict[str, int] | None, list[str]]:
        """(case_id -> class index over all splits, sorted class names), or (None, []) when unconditional."""
        if cfg.vdm.n_classes == 0:
            return None, []
        by_case = case_labels(prepared, SPLITS, cfg.vdm.label_from, cfg.vdm.labels_csv)
        names = sorted_class_names(list(by_case.values()), cfg.vdm.n_classes)
        return dict(zip(by_case, label_indices(list(by_case.values()), names))), names

    def __init__(self, cfg: Config, runtime: Runtime, data: VDMData):
        self.cfg, self.runtime, self.data = cfg, runtime, data
        self.deg = self.degradation(cfg)
        self.in_channels = 1 + self.deg.cond_channels
        self.net = build_vdm(cfg, data.data_shape, self.deg.cond_channels).to(runtime.device)

    def optimisers(self, lr: float, betas: tuple[float, float], weight_decay: float, grad_clip: float):
        """AdamW; with vdm.class_lr_scale != 1 the class path (CONDITIONING: the class embedding and the
        U-Net's conditioning projection) is its own group, stepped at that multiple of the schedule."""
        scale = self.cfg.vdm.class_lr_scale
        named = list(self.net.named_parameters())
        cls = [p for n, p in named if n.startswith(CONDITIONING)]
        if scale == 1.0 or not cls:
            return torch.optim.AdamW(self.net.parameters(), lr=lr, betas=betas, weight_decay=weight_decay)
        rest = [p for n, p in named if not n.startswith(CONDITIONING)]
        return torch.optim.AdamW([{"params": rest}, {"params": cls, "lr": lr * scale, "lr_scale": scale}],
                                 lr=lr, betas=betas, weight_decay=weight_decay)

    def attach(self, ema: nn.Module) -> None:
        pass

    def inputs(self, batch) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """(integer levels x, class labels or None, condition planes or None) of a batch, on the device."""
        dev = self.runtime.device
        x = to_levels(batch.x0, self.cfg.vdm.vocab_size).to(dev)
        labels = None
        if self.data.labels is not None:
            try:
                labels = torch.tensor([self.data.labels[c] for c in batch.case_id], dtype=torch.long, device=dev)
            except KeyError as e:
                raise InputError(f"no class label for slice {e.args[0]!r}") from None
        cond = self.deg.model_condition(batch.cond, batch.mask).to(dev) if self.cfg.vdm.image_condition else None
        return x, labels, cond

    def step(self, ctx: StepContext, batch, opt, scaler) -> tuple[float, dict[str, float]]:
        """model_vlb then backward_vlb (right after zero_grad: it sets the schedule shape parameters'
        gradients, so gradients must not be accumulated across calls); returns the total bits/dim
        averaged over ranks and the terms."""
        v, rt = self.cfg.vdm, self.runtime
        x, labels, cond = self.inputs(batch)
        # noise keyed by global position, one antithetic offset per step: independent of the rank split
        f_shape = (x.shape[0], *latent_shape(self.cfg, self.data.data_shape))  # shape of the encoder output f
        noise = position_noise(ctx.seed, ctx.step, batch.position, ctx.batch_size * rt.world_size, f_shape, v.antithetic)
        # classifier-free guidance: the score net sees "no class" for a share label_dropout of the
        # examples, chosen by global position (independent of the rank split, like the noise)
        drop = label_drop(ctx.seed, batch.position, v.label_dropout) if labels is not None and v.label_dropout > 0 else None
        opt.zero_grad(set_to_none=True)
        terms = model_vlb(self.net, x, labels=labels, image_cond=cond, noise=noise, timesteps=v.timesteps, drop=drop)
        bpd = backward_vlb(terms, self.net.gamma)
        means = {k: float(rt.mean_over_ranks(bpd[k])) for k in (*VLB_TERMS, "total")}
        value = means.pop("total")
        ctx.check_finite("loss", value)
        if rt.distributed:  # not DDP-wrapped: average the gradients (the VLB and the variance term alike)
            for p in self.net.parameters():
                if p.grad is not None:
                    p.grad.copy_(rt.mean_over_ranks(p.grad))
        norm = torch.nn.utils.clip_grad_norm_(self.net.parameters(), ctx.grad_clip)
        if not torch.isfinite(norm):
            raise ctx.failure("gradient norm", float(norm))
        opt.step()
        return value, {f"{k}_bpd": means[k] for k in VLB_TERMS}

    def val_batch(self, ema: nn.Module, batch, start: int, seed: int) -> dict[str, float]:
        """Negative VLB (bits/dim, total and terms) of the EMA model, noise from (seed, VAL, start); the
        labels are never dropped (the conditional model is what is validated)."""
        x, labels, cond = self.inputs(batch)
        g = torch.Generator().manual_seed(mix_seed(seed, VAL, start))
        v = self.cfg.vdm
        terms = model_vlb(ema, x, labels=labels, image_cond=cond, generator=g, timesteps=v.timesteps,
                          antithetic=v.antithetic)
        bpd = terms.bpd()
        return {"total": float(bpd["total"]), **{f"{k}_bpd": float(bpd[k]) for k in VLB_TERMS}}

    def metadata(self) -> dict[str, str] | None:
        return vdm_metadata(self.cfg, self.data.data_shape, self.data.class_names, self.deg.cond_channels)
