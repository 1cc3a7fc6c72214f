"""The negative variational lower bound of VDM (Kingma et al. 2021, Sec. 4 and eq. 11-17) in its
three named terms, per example in nats, and in bits per dimension for reporting:

    -log p(x) <= E_{q(z_0|x)}[-log p(x|z_0)]          reconstruction  (L_0)
                + KL(q(z_1|x) || N(0, I))              latent / prior (L_1), closed form
                + L_T(x)                               diffusion

    L_inf(x) = 0.5 E_{t~U(0,1), eps} [ gamma'(t) ||eps - eps_hat(z_t; t)||^2 ]            (eq. 17)
    L_T(x)   = 0.5 T E_{i~U{1..T}, eps} [ expm1(gamma(t) - gamma(s)) ||eps - eps_hat(z_t; t)||^2 ]
               with t = i/T, s = (i-1)/T                                               (eq. 13 / App. E)

z_t = alpha_t f + sigma_t eps is the forward process (eq. 1) applied to the encoder output f
(vdm.networks: the reference's f = 2 (x + 1/2) / V - 1 of x in {0..V-1}, or the paper's ResNet
latent). Times are drawn antithetically, t_i = (u_0 + i/B) mod 1 (VDM App. I.1 "low-discrepancy
sampler"). The schedule's shape parameters are trained to reduce the variance of the
diffusion-loss estimate (Sec. 5.2): `backward_vlb` gives them the gradient of E[L_diff^2].

Shapes: x integer levels [B, *dims] (any dims); f, z, eps [B, *latent dims]; terms [B].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from ..errors import InputError
from .schedule import alpha, gamma_and_derivative, sigma, sigma2

ScoreFn = Callable[[Tensor, Tensor, "Tensor | None"], Tensor]  # (z_t [B,...], gamma_t [B], cond) -> eps_hat


def _sum_dims(v: Tensor) -> Tensor:
    return v.flatten(1).sum(1)


def _bcast(v: Tensor, like: Tensor) -> Tensor:
    """[B] -> [B, 1, ...] against `like`; a scalar stays a scalar."""
    return v.reshape(-1, *([1] * (like.ndim - 1))) if v.ndim else v


def antithetic_times(batch: int, u0: Tensor | float) -> Tensor:
    """t_i = (u_0 + i/B) mod 1, i = 0..B-1: B evenly spaced times with one uniform offset (App. I.1)."""
    if batch < 1:
        raise InputError(f"batch {batch!r}: expected >= 1")
    u0 = torch.as_tensor(u0, dtype=torch.float64)
    return torch.remainder(u0 + torch.arange(batch, dtype=torch.float64) / batch, 1.0)


def q_sample(f: Tensor, gamma_t: Tensor, eps: Tensor) -> Tensor:
    """z_t = alpha_t f + sigma_t eps with alpha_t^2 = sigmoid(-gamma_t), sigma_t^2 = sigmoid(gamma_t)  (eq. 1, 4)."""
    g = _bcast(gamma_t, f)
    return alpha(g) * f + sigma(g) * eps


def level_values(vocab_size: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """The V data levels in the diffused space: 2 (x + 1/2) / V - 1, x = 0..V-1 (VDM reference encoder)."""
    return 2.0 * (torch.arange(vocab_size, dtype=dtype) + 0.5) / vocab_size - 1.0


def level_logits(z0_rescaled: Tensor, gamma_0: Tensor, vocab_size: int) -> Tensor:
    """Logits of p(x|z_0) over the V levels, [*z.shape, V]: -(z_0/alpha_0 - x_v)^2 / (2 sigma_0^2/alpha_0^2).

    This is the reference decoder: with a uniform prior over levels it is the exact posterior of
    x given z_0 ~ q(z_0|x) for independent dimensions (sigma_0/alpha_0 = exp(gamma_0/2)).
    """
    levels = level_values(vocab_size, z0_rescaled.dtype).to(z0_rescaled.device)
    inv_std = torch.exp(-0.5 * _bcast(gamma_0, z0_rescaled))
    return -0.5 * ((z0_rescaled[..., None] - levels) * inv_std[..., None]) ** 2


def categorical_log_prob(logits: Tensor, x: Tensor) -> Tensor:
    """log softmax(logits)[x] summed over all dims but the batch: [B]. logits [*x.shape, V], x int."""
    logp = torch.log_softmax(logits, dim=-1)
    return _sum_dims(logp.gather(-1, x.long()[..., None]).squeeze(-1))


def reconstruction_loss(decode_log_prob: Callable[[Tensor, Tensor, Tensor], Tensor], x: Tensor, f: Tensor,
                        gamma_0: Tensor, eps_0: Tensor) -> Tensor:
    """-log p(x | z_0) with z_0 = alpha_0 f + sigma_0 eps_0, decoded from z_0 / alpha_0  (L_0, eq. 11).

    decode_log_prob(x, z0_rescaled, gamma_0) -> log p(x|z_0) [B] (vdm.networks decoders).
    """
    z0 = q_sample(f, gamma_0, eps_0)
    return -decode_log_prob(x, z0 / alpha(gamma_0), gamma_0)


def latent_loss(f: Tensor, gamma_1: Tensor) -> Tensor:
    """KL(q(z_1|x) || N(0, I)) = 0.5 sum(alpha_1^2 f^2 + sigma_1^2 - log sigma_1^2 - 1)  (L_1, closed form)."""
    var_1 = sigma2(gamma_1)
    return 0.5 * _sum_dims((1.0 - var_1) * f**2 + var_1 - torch.log(var_1) - 1.0)


def eps_mse(score: ScoreFn, f: Tensor, gamma_t: Tensor, eps: Tensor, cond: Tensor | None) -> Tensor:
    """||eps - eps_hat(z_t; gamma_t)||^2 per example [B]."""
    eps_hat = score(q_sample(f, gamma_t, eps), gamma_t, cond)
    return _sum_dims((eps - eps_hat) ** 2)


def diffusion_loss_continuous(score: ScoreFn, gamma: nn.Module, f: Tensor, t: Tensor, eps: Tensor,
                              cond: Tensor | None = None) -> Tensor:
    """0.5 gamma'(t) ||eps - eps_hat(z_t; t)||^2, one sample of L_inf per example (eq. 17)."""
    g_t, dg_t = gamma_and_derivative(gamma, t.to(f.dtype))
    return 0.5 * dg_t * eps_mse(score, f, g_t, eps, cond)


def discretise_time(t: Tensor, timesteps: int) -> tuple[Tensor, Tensor]:
    """(t(i), s(i)) = (i/T, (i-1)/T) with i = ceil(t T) in 1..T (t = 0 maps to i = 1)."""
    i = torch.clamp(torch.ceil(t * timesteps), min=1)
    return i / timesteps, (i - 1) / timesteps


def diffusion_loss_discrete(score: ScoreFn, gamma: nn.Module, f: Tensor, t: Tensor, eps: Tensor, timesteps: int,
                            cond: Tensor | None = None) -> Tensor:
    """0.5 T expm1(gamma(t) - gamma(s)) ||eps - eps_hat(z_t; t)||^2 with s = t - 1/T, per example (eq. 13).

    Fidelity decision (issue 18): the weight expm1(gamma_t - gamma_s) is computed from times and gammas
    in float64. gamma_t - gamma_s ~ (gamma_max - gamma_min) / T is a difference of two numbers of size
    ~10, so in float32 it carries a relative error of up to 3e-4 at T = 1000 and 3e-3 at T = 10000
    (learned_nnet; 6e-5 / 6e-4 for the linear schedules). z_t and eps_hat are computed as before, at
    gamma_t in the data's dtype."""
    t_i, _ = discretise_time(t.to(f.dtype), timesteps)
    t64, s64 = discretise_time(t.to(torch.float64), timesteps)
    weight = torch.expm1(gamma(t64).double() - gamma(s64).double()).to(f.dtype)
    g_t = gamma(t_i)
    return 0.5 * timesteps * weight * eps_mse(score, f, g_t, eps, cond)


def bits_per_dim(nats: Tensor, dims: int) -> Tensor:
    """nats per example / (D ln 2), D = number of data dimensions (pixels x channels)."""
    return nats / (dims * math.log(2.0))


@dataclass(frozen=True)
class VLBTerms:
    """The three terms of the negative VLB per example, in nats, shape [B]; `dims` = data dimensions."""

    reconstruction: Tensor
    latent: Tensor
    diffusion: Tensor
    dims: int

    @property
    def total(self) -> Tensor:
        return self.reconstruction + self.latent + self.diffusion

    def bpd(self) -> dict[str, Tensor]:
        """Batch means in bits/dim: reconstruction, latent, diffusion, total (scalars, differentiable)."""
        out = {k: bits_per_dim(getattr(self, k), self.dims).mean() for k in ("reconstruction", "latent", "diffusion")}
        out["total"] = out["reconstruction"] + out["latent"] + out["diffusion"]
        return out


def vlb_terms(x: Tensor, f: Tensor, decode_log_prob: Callable[[Tensor, Tensor, Tensor], Tensor], score: ScoreFn,
              gamma: nn.Module, *, t: Tensor, eps: Tensor, eps_0: Tensor, cond: Tensor | None = None,
              timesteps: int = 0) -> VLBTerms:
    """The three VLB terms for integer data x [B, *dims] encoded as f [B, *latent] (VDM's `__call__`).

    decode_log_prob(x, z_0/alpha_0, gamma_0) -> log p(x|z_0) [B]; score(z_t, gamma_t, cond) -> eps_hat.
    t [B] in [0, 1) (antithetic_times); eps, eps_0 standard normal like f. timesteps = 0 is the
    continuous-time loss, T > 0 the finite-T loss.
    """
    if timesteps < 0:
        raise InputError(f"timesteps {timesteps!r}: expected 0 (continuous time) or a positive T")
    if eps.shape != f.shape or eps_0.shape != f.shape or t.shape != f.shape[:1]:
        raise InputError(f"noise shapes t {tuple(t.shape)}, eps {tuple(eps.shape)}, eps_0 {tuple(eps_0.shape)}: "
                         f"expected [{f.shape[0]}] and {tuple(f.shape)}")
    ends = gamma(torch.tensor([0.0, 1.0], dtype=f.dtype, device=f.device))
    recon = reconstruction_loss(decode_log_prob, x, f, ends[0], eps_0)
    latent = latent_loss(f, ends[1])
    if timesteps == 0:
        diff = diffusion_loss_continuous(score, gamma, f, t, eps, cond)
    else:
        diff = diffusion_loss_discrete(score, gamma, f, t, eps, timesteps, cond)
    return VLBTerms(recon, latent, diff, dims=int(x[0].numel()))


def backward_vlb(terms: VLBTerms, gamma: nn.Module) -> dict[str, Tensor]:
    """Back-propagate one training step and return the detached bits/dim (VDM Sec. 5.2).

    Every parameter gets d(total bits/dim)/d(param) (the batch-mean negative VLB), except the
    schedule's shape parameters (gamma.shape_parameters(), only the noise net has any), which get
    d/d(eta) of mean(L_diff^2), L_diff the per-example diffusion loss in bits/dim: the gradient
    of the second moment, hence of the variance, of the diffusion-loss estimate. In continuous
    time the VLB depends on the schedule only through its endpoints (eq. 17 is an integral over
    SNR), so eta is free to minimise the variance; the endpoints stay on the VLB.
    """
    bpd = terms.bpd()
    shape = [p for p in gamma.shape_parameters() if p.requires_grad]
    var_grads = ()
    if shape:
        second_moment = (bits_per_dim(terms.diffusion, terms.dims) ** 2).mean()
        var_grads = torch.autograd.grad(second_moment, shape, retain_graph=True, allow_unused=True)
    bpd["total"].backward()
    for p, g in zip(shape, var_grads):
        p.grad = torch.zeros_like(p) if g is None else g.detach()
    return {k: v.detach() for k, v in bpd.items()}
