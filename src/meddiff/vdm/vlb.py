"""The VDM's variational lower bound on one batch: noise drawn reproducibly (`draw_noise`, or per example
position with `position_noise`, so 2 ranks draw what one process with the double batch draws), then
`loss.vlb_terms` (`model_vlb`). What a training loop calls (see the package docstring):

    terms = model_vlb(model, x_levels, labels=..., image_cond=..., generator=g, timesteps=0)
    bpd = backward_vlb(terms, model.gamma)        # gradients set; returns bits/dim per term
    optimiser.step()

Under `meddiff train` the VDM's Objective is meddiff.objectives.vdm.VDMObjective.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..data.order import LABEL, NOISE, TIME, mix_seed
from ..errors import InputError
from .loss import VLBTerms, antithetic_times, vlb_terms
from .networks import NO_CLASS, VDMModel

VLB_TERMS = ("reconstruction", "latent", "diffusion")  # logged in bits/dim as <term>_bpd


@torch.no_grad()
def draw_noise(f_shape: tuple[int, ...], generator: torch.Generator | None, antithetic: bool = True
               ) -> tuple[Tensor, Tensor, Tensor]:
    """(t [B] float64, eps, eps_0 [B, *latent]) on the CPU from `generator`: t antithetic (one
    uniform offset, App. I.1) or iid uniform."""
    b = f_shape[0]
    u = torch.rand(1 if antithetic else b, generator=generator, dtype=torch.float64)
    t = antithetic_times(b, u[0]) if antithetic else u
    eps = torch.randn(f_shape, generator=generator)
    eps_0 = torch.randn(f_shape, generator=generator)
    return t, eps, eps_0


@torch.no_grad()
def position_noise(seed: int, step: int, positions: Tensor, global_batch: int, f_shape: tuple[int, ...],
                   antithetic: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """(t, eps, eps_0) for the examples at global `positions` of training step `step`, independent
    of how the global batch of `global_batch` examples is split over ranks.

    eps, eps_0 of position p come from a generator seeded by (seed, NOISE, p). Antithetic times use
    one offset u_0 per step, seeded by (seed, TIME, step) and so shared by all ranks, and
    t_p = (u_0 + (p - step G) / G) mod 1 (App. I.1 over the global batch of size G): the ranks'
    times interleave into one evenly spaced set, so a 2-rank run draws the same noise as one
    process with the double batch. Without antithetic sampling t_p is uniform from p's generator.
    """
    if positions.ndim != 1 or positions.shape[0] != f_shape[0]:
        raise InputError(f"positions of shape {tuple(positions.shape)}: expected [{f_shape[0]}]")
    ts, eps, eps_0 = [], [], []
    for p in positions.tolist():
        g = torch.Generator().manual_seed(mix_seed(seed, NOISE, p))
        u = torch.rand(1, generator=g, dtype=torch.float64)
        eps.append(torch.randn(tuple(f_shape[1:]), generator=g))
        eps_0.append(torch.randn(tuple(f_shape[1:]), generator=g))
        ts.append(u)
    if antithetic:
        u0 = torch.rand(1, generator=torch.Generator().manual_seed(mix_seed(seed, TIME, step)), dtype=torch.float64)[0]
        offsets = (positions.to(torch.float64) - step * global_batch) / global_batch
        t = torch.remainder(u0 + offsets, 1.0)
    else:
        t = torch.cat(ts)
    return t, torch.stack(eps), torch.stack(eps_0)


@torch.no_grad()
def label_drop(seed: int, positions: Tensor, p: float) -> Tensor:
    """Label dropout of classifier-free guidance (Ho & Salimans 2022, Alg. 1: c <- none with probability
    p_uncond): bool [B], True where the example at global position n trains the "no class" branch,
    u_n < p with u_n ~ U[0, 1) from a generator seeded by (seed, LABEL, n). A function of (seed, n)
    only, so independent of the step, the batch and the split over ranks, like `position_noise`."""
    if positions.ndim != 1:
        raise InputError(f"positions of shape {tuple(positions.shape)}: expected one dimension [B]")
    if not 0.0 <= p < 1.0:
        raise InputError(f"label dropout p {p!r}: expected 0 <= p < 1")
    u = [torch.rand(1, generator=torch.Generator().manual_seed(mix_seed(seed, LABEL, n)), dtype=torch.float64)
         for n in positions.tolist()]
    return (torch.cat(u) < p) if u else torch.zeros(0, dtype=torch.bool)


def drop_labels(labels: Tensor, drop: Tensor) -> Tensor:
    """labels with NO_CLASS (-1) where drop is True."""
    return torch.where(drop.to(labels.device), torch.full_like(labels, NO_CLASS), labels)


def model_vlb(model: VDMModel, x: Tensor, *, labels: Tensor | None = None, image_cond: Tensor | None = None,
              generator: torch.Generator | None = None, timesteps: int = 0, antithetic: bool = True,
              noise: tuple[Tensor, Tensor, Tensor] | None = None, drop: Tensor | None = None) -> VLBTerms:
    """The three VLB terms of `model` on integer data x [B, *dims] (levels 0..V-1, see networks.to_levels).

    labels: class labels [B] (class-conditional model) and/or image_cond: condition planes for a
    UNetScore (restoration under the VDM objective). noise: (t, eps, eps_0) to use instead of
    drawing them from `generator` (e.g. per-example noise from the trainer). drop: bool [B] (`label_drop`),
    the score network sees "no class" for those examples (classifier-free guidance's unconditional
    branch); the encoder and decoder keep the label, so both branches model the same latent f.
    """
    if labels is not None and image_cond is not None:
        raise InputError("give class labels or an image condition, not both")
    if drop is not None and labels is None:
        raise InputError("label dropout needs class labels (a class-conditional VDM)")
    emb = model.embed(labels)
    if drop is not None and bool(drop.any()):
        score_cond = model.embed(drop_labels(labels, drop))
    else:
        score_cond = emb if emb is not None else image_cond
    f = model.encoder(x, emb)
    t, eps, eps_0 = noise if noise is not None else draw_noise(tuple(f.shape), generator, antithetic)
    return vlb_terms(
        x, f, lambda v, z0r, g0: model.decoder.log_prob(v, z0r, g0, emb), model.score, model.gamma,
        t=t.to(f.device), eps=eps.to(f.device, f.dtype), eps_0=eps_0.to(f.device, f.dtype), cond=score_cond,
        timesteps=timesteps,
    )
