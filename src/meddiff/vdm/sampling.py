"""Generation from a VDM (Kingma et al. 2021, Sec. 3.3 and App. A.4; the reference's `sample_step`).

Ancestral sampling over any number of steps T chosen at sampling time: z_1 ~ N(0, I), then for
i = T..1 with t = i/T, s = (i-1)/T

    z_s ~ q(z_s | z_t, x = x_hat(z_t; t)) = N(mu, sigma_s^2 c I),   c = -expm1(gamma_s - gamma_t)
    mu  = (alpha_s / alpha_t) (z_t - sigma_t c eps_hat(z_t; t))                         (eq. 32-33)

(noise is added at every step, the last included: z_0 is itself a slightly noisy latent), and
x ~ p(x | z_0) by the decoder. Classifier-free guidance (`guided_score`) replaces eps_hat by
(1 + w) eps_hat(z_t; c) - w eps_hat(z_t; no class). One torch.Generator per image, so a sample depends only on its
own seed (as samplers.ancestral).

`VDMDenoiser` presents a VDM score network under meddiff's denoiser contract
(diffusion.denoiser.Denoiser), so the ancestral, DDIM and DPM-Solver++ samplers run on a VDM
unchanged (they see only its time grid and x0_hat). Its grid is either discrete, T times
t_k = (k+1)/T read as a DiscreteSchedule with alpha_bar_k = sigmoid(-gamma(t_k)) (`from_gamma`;
what `meddiff sample` uses, T = vdm.timesteps or 1000), or continuous (`continuous`): `steps` times
in (0, 1] of the model's own gamma(t) (`continuous_grid`), evaluated at those exact times.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from ..diffusion.grid import GRIDS, TimeGrid, grid_from_alpha_bar, time_grid
from ..diffusion.schedule import DiscreteSchedule
from ..errors import InputError
from ..samplers.noise import randn_per_image
from .loss import ScoreFn, _bcast
from .schedule import alpha, sigma, sigma2


def posterior_c(gamma_s: Tensor, gamma_t: Tensor) -> Tensor:
    """c = 1 - SNR(t)/SNR(s) = -expm1(gamma_s - gamma_t) (= sigma_{t|s}^2 / sigma_t^2)."""
    return -torch.expm1(gamma_s - gamma_t)


def posterior_mean(z_t: Tensor, eps_hat: Tensor, gamma_s: Tensor, gamma_t: Tensor) -> Tensor:
    """Mean of q(z_s | z_t, x_hat): (alpha_s / alpha_t) (z_t - sigma_t c eps_hat)  (eq. 32-33)."""
    gs, gt = _bcast(gamma_s, z_t), _bcast(gamma_t, z_t)
    return alpha(gs) / alpha(gt) * (z_t - sigma(gt) * posterior_c(gs, gt) * eps_hat)


def posterior_variance(gamma_s: Tensor, gamma_t: Tensor) -> Tensor:
    """Variance of q(z_s | z_t, x): sigma_s^2 c  (eq. 33)."""
    return sigma2(gamma_s) * posterior_c(gamma_s, gamma_t)


def guided_eps(eps_c: Tensor, eps_u: Tensor, w: float) -> Tensor:
    """Classifier-free guidance (Ho & Salimans 2022, eq. 6): eps~ = (1 + w) eps(z, c) - w eps(z)."""
    return (1.0 + w) * eps_c - w * eps_u


def guided_score(score: ScoreFn, w: float, uncond: Tensor) -> ScoreFn:
    """The score function of classifier-free guidance with weight w: score(z, gamma, c) evaluates the
    conditional branch (class vectors c [B, D]) and the unconditional one (`uncond`, the "no class"
    vectors [B, D]) in one batched call of `score` and combines them by `guided_eps`."""
    def guided(z: Tensor, gamma_t: Tensor, cond: Tensor | None) -> Tensor:
        if cond is None or cond.shape != uncond.shape:
            raise InputError(f"guided score: expected class vectors of shape {tuple(uncond.shape)}, got "
                             f"{None if cond is None else tuple(cond.shape)}")
        gamma_t = gamma_t.expand(z.shape[0]) if gamma_t.ndim == 0 else gamma_t
        eps = score(torch.cat([z, z]), torch.cat([gamma_t, gamma_t]), torch.cat([cond, uncond.to(cond)]))
        eps_c, eps_u = eps.chunk(2)
        return guided_eps(eps_c, eps_u, w)
    return guided


@torch.no_grad()
def sample_z0(score: ScoreFn, gamma: nn.Module, shape: Sequence[int], *, steps: int,
              generators: Sequence[torch.Generator], cond: Tensor | None = None,
              device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
              callback: Callable[[int, Tensor], None] | None = None) -> Tensor:
    """z_0 [B, *shape[1:]] by `steps` ancestral steps from z_1 ~ N(0, I).

    score(z_t, gamma_t [B], cond) -> eps_hat; generators: one per image; callback(i, z_s) after step i.
    """
    if steps < 1:
        raise InputError(f"steps {steps!r}: expected an integer >= 1")
    device = torch.device(device)
    z = randn_per_image(shape, generators, device).to(dtype)
    b = shape[0]
    for i in range(steps, 0, -1):
        t = torch.tensor(i / steps, dtype=dtype, device=device)
        s = torch.tensor((i - 1) / steps, dtype=dtype, device=device)
        g_t, g_s = gamma(t), gamma(s)
        eps_hat = score(z, g_t.expand(b), cond)
        noise = randn_per_image(shape, generators, device).to(dtype)
        z = posterior_mean(z, eps_hat, g_s, g_t) + posterior_variance(g_s, g_t).sqrt() * noise
        if callback is not None:
            callback(steps - i, z)
    return z


def decode_levels(logits: Tensor, generators: Sequence[torch.Generator] | None = None) -> Tensor:
    """x from p(x|z_0) given its logits [B, *dims, V]: a sample (Gumbel-max, one generator per image)
    or, with generators=None, the most probable level. int64 [B, *dims]."""
    if generators is None:
        return logits.argmax(-1)
    u = torch.stack([torch.rand(tuple(logits.shape[1:]), generator=g, dtype=torch.float64) for g in generators])
    gumbel = -torch.log(-torch.log(u.clamp_min(1e-300))).to(logits.device, logits.dtype)
    return (logits + gumbel).argmax(-1)


@dataclass
class VDMDenoiser:
    """A VDM score network under the denoiser contract of diffusion.denoiser (x0_hat = d(x_t, k, cond)).

    timesteps: T of the grid t_k = (k+1)/T; cond passed to the samplers is the condition planes
    [B, C, *spatial] (an empty [B, 0, *spatial] tensor for an unconditional model: the samplers
    take the output's shape from it); `labels` are class-conditioning vectors (VDMModel.embed)
    used instead of the planes when set. Diffuses the image itself (no residual mode).
    """

    score: ScoreFn
    sched: DiscreteSchedule | None  # the discrete grid of T times; None: continuous times of `gamma`
    labels: Tensor | None = None
    gamma: nn.Module | None = None
    size_multiple: int = 1  # of the score network (restore pads to it)

    @classmethod
    def from_gamma(cls, score: ScoreFn, gamma: nn.Module, timesteps: int, labels: Tensor | None = None,
                   size_multiple: int = 1) -> "VDMDenoiser":
        """On the discrete grid of `timesteps` times t_k = (k+1)/T."""
        return cls(score, discrete_schedule(gamma, timesteps), labels, gamma, size_multiple)

    @classmethod
    def continuous(cls, score: ScoreFn, gamma: nn.Module, labels: Tensor | None = None,
                   size_multiple: int = 1) -> "VDMDenoiser":
        """On continuous times: the samplers' grid is `continuous_grid` of the model's gamma."""
        return cls(score, None, labels, gamma, size_multiple)

    def time_grid(self, steps: int | None, kind: str = "uniform") -> TimeGrid:
        if self.sched is not None:
            return time_grid(self.sched, steps, kind)
        if steps is None:
            raise InputError("a continuous-time VDM has no finest grid: give the number of steps")
        assert self.gamma is not None
        return continuous_grid(self.gamma, steps, kind)

    def from_diffused(self, z0: Tensor, cond: Tensor) -> Tensor:
        return z0

    def to_diffused(self, x0: Tensor, cond: Tensor) -> Tensor:
        return x0

    def call_bytes(self, batch: int, spatial: tuple[int, ...], device: torch.device) -> int | None:
        """The memory estimate of one call of a U-Net score network (meddiff.nn.memory.network_call_bytes)."""
        from ..nn.memory import network_call_bytes

        return network_call_bytes(getattr(self.score, "unet", None), batch, spatial, device)

    def __call__(self, x_t: Tensor, k: Tensor, cond: Tensor) -> Tensor:
        """x0_hat = (z_t - sigma_t eps_hat) / alpha_t from the score network's eps_hat."""
        if k.is_floating_point():  # continuous times t
            assert self.gamma is not None
            g = self.gamma(k.to(x_t.device)).to(x_t.dtype)
        else:
            assert self.sched is not None
            g = -self.sched.log_snr.to(x_t.device)[k.to(x_t.device)].to(x_t.dtype)  # gamma(t_k)
        net_cond = self.labels if self.labels is not None else (cond if cond.shape[1] > 0 else None)
        eps_hat = self.score(x_t, g, net_cond)
        return (x_t - _bcast(sigma(g), x_t) * eps_hat) / _bcast(alpha(g), x_t)


@torch.no_grad()
def discrete_schedule(gamma: nn.Module, timesteps: int) -> DiscreteSchedule:
    """The DiscreteSchedule with alpha_bar_k = sigmoid(-gamma((k+1)/T)), k = 0..T-1, in float64."""
    if timesteps < 1:
        raise InputError(f"timesteps {timesteps!r}: expected an integer >= 1")
    t = torch.arange(1, timesteps + 1, dtype=torch.float64) / timesteps
    ab = torch.sigmoid(-gamma(t).double().cpu())
    prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
    return DiscreteSchedule(1.0 - ab / prev)


@torch.no_grad()
def continuous_grid(gamma: nn.Module, steps: int, kind: str = "uniform") -> TimeGrid:
    """`steps` continuous times from t = 1 down to t = 1/steps, then the clean end: "uniform" evenly
    spaced in t (t_i = (steps - i)/steps, the times of `sample_z0`), "logsnr" evenly spaced in
    gamma between gamma(1) and gamma(1/steps) (times found by bisection: gamma is monotone);
    alpha_bar = sigmoid(-gamma(t)) in float64."""
    if kind not in GRIDS:
        raise ValueError(f"grid {kind!r}: expected one of {list(GRIDS)}")
    if steps < 1:
        raise InputError(f"steps {steps!r}: expected an integer >= 1")
    t = torch.arange(steps, 0, -1, dtype=torch.float64) / steps
    if kind == "logsnr" and steps > 1:
        g = lambda u: gamma(u).double().cpu()  # noqa: E731
        targets = torch.linspace(float(g(t[:1])[0]), float(g(t[-1:])[0]), steps, dtype=torch.float64)
        lo, hi = torch.zeros(steps, dtype=torch.float64), torch.ones(steps, dtype=torch.float64)
        for _ in range(60):  # bisection of gamma(t) = target on [0, 1]
            mid = (lo + hi) / 2
            above = g(mid) > targets
            lo, hi = torch.where(above, lo, mid), torch.where(above, mid, hi)
        t = torch.cat([t[:1], ((lo + hi) / 2)[1:-1], t[-1:]])
    return grid_from_alpha_bar(t, torch.sigmoid(-gamma(t).double().cpu()))
