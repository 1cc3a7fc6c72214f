"""DPM-Solver++ multistep in data (x0) prediction (Lu et al. 2022, "DPM-Solver++", Algorithm 2).

The probability-flow ODE in lambda = log(alpha / sigma) (half the log-SNR) has the exact solution

    x_t = (sigma_t / sigma_s) x_s + sigma_t int_{lambda_s}^{lambda_t} e^lambda x0_hat(x_lambda) dlambda    (eq. 9)

On a grid t_0 (noisiest) ... t_{n-1} = k_0, then the clean end (sigma = 0), with h_i = lambda_i - lambda_{i-1}
and m_i = x0_hat(x_i, t_i) (clipped to [-1, 1] in image space if clip):

    order 1 (DDIM):  x_i = (sigma_i / sigma_{i-1}) x_{i-1} - alpha_i (e^{-h_i} - 1) m_{i-1}
    order 2 (2M):    the same with D_i = (1 + 1/(2 r_i)) m_{i-1} - 1/(2 r_i) m_{i-2}, r_i = h_{i-1} / h_i
    order 3 (3M):    x0_hat expanded to second order in lambda around lambda_{i-1} (derivatives from the
                     quadratic through m_{i-1}, m_{i-2}, m_{i-3}); the integral of each Taylor term is exact:
                     x_i = (sigma_i / sigma_{i-1}) x_{i-1}
                           + alpha_i [(1 - e^{-h}) m + (h - 1 + e^{-h}) m' + (h^2/2 - h + 1 - e^{-h}) m'']

The first step is first order, the second at most second order (multistep warm-up). The last step,
to the clean end (h = +inf), is first order whatever the order: it returns the x0 estimate at k_0,
as the ancestral and DDIM samplers do, so all three share one time grid and one number of
network evaluations (= steps).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor

from ..diffusion.denoiser import Denoiser
from ..diffusion.grid import TimeGrid
from .consistency import Consistency, RePaint, constrain_x0, finalize
from .ddim import predict_x0
from .noise import randn_per_image

ORDERS = (1, 2, 3)


def dpmpp_first_order(x: Tensor, m0: Tensor, sigma_ratio: float, alpha_t: float, h: float) -> Tensor:
    """x_t = (sigma_t/sigma_s) x_s - alpha_t (e^{-h} - 1) m0  (DPM-Solver++ 1, = DDIM eta=0)."""
    return sigma_ratio * x - (alpha_t * math.expm1(-h)) * m0


def dpmpp_2m_update(x: Tensor, m0: Tensor, m1: Tensor, sigma_ratio: float, alpha_t: float, h: float, h_prev: float) -> Tensor:
    """One DPM-Solver++(2M) step (Algorithm 2): m0 = x0_hat at the current point, m1 at the previous one,
    h = lambda_t - lambda_s, h_prev = lambda_s - lambda_{s'}."""
    r = h_prev / h
    d = (1 + 1 / (2 * r)) * m0 - (1 / (2 * r)) * m1
    return dpmpp_first_order(x, d, sigma_ratio, alpha_t, h)


def dpmpp_3m_update(x: Tensor, m0: Tensor, m1: Tensor, m2: Tensor, sigma_ratio: float, alpha_t: float,
                    h: float, h0: float, h1: float) -> Tensor:
    """One third-order multistep step: m0, m1, m2 at lambda_s, lambda_s - h0, lambda_s - h0 - h1.

    Derivatives at lambda_s from the interpolating quadratic (Newton divided differences):
    m' = f01 + h0 f012, m'' = 2 f012, with f01 = (m0 - m1)/h0, f12 = (m1 - m2)/h1, f012 = (f01 - f12)/(h0 + h1).
    """
    f01 = (m0 - m1) / h0
    f012 = (f01 - (m1 - m2) / h1) / (h0 + h1)
    em = math.expm1(-h)  # e^{-h} - 1
    c0, c1, c2 = -em, h + em, h * h / 2 - h - em
    return sigma_ratio * x + alpha_t * (c0 * m0 + c1 * (f01 + h0 * f012) + c2 * 2 * f012)


@torch.no_grad()
def sample_dpm_solver_pp(
    denoiser: Denoiser,
    cond: Tensor,
    times: TimeGrid | None = None,
    *,
    steps: int | None = None,
    order: int = 2,
    grid: str = "uniform",
    generators: Sequence[torch.Generator],
    clip: bool = True,
    callback: Callable[[int, Tensor, Tensor], None] | None = None,
    consistency: Consistency | None = None,
) -> Tensor:
    """Sample x0 [B, 1, *spatial] (image space, [-1, 1]) given condition planes cond [B, C_cond, *spatial].

    Deterministic given x_T ~ N(0, I), which is drawn from `generators` (one per image).
    steps: network evaluations (None = every timestep); order: 1 (= DDIM eta=0), 2 (2M) or 3 (3M);
    grid: "uniform" (respaced timesteps, even in t) or "logsnr" (even in lambda; diffusion.grid);
    times: the time grid to use instead (None: denoiser.time_grid(steps, grid)).
    clip: clamp each x0 estimate to [-1, 1] in image space before it enters the update.
    callback(i, x, x0_hat) after each step i = 0..steps-1 (x0_hat in image space).
    consistency: a callable image -> image (samplers.consistency) applied to each x0 estimate after
    clipping, before it enters the update, and to the result (the last step returns the estimate).
    """
    if order not in ORDERS:
        raise ValueError(f"order {order!r}: expected one of {list(ORDERS)}")
    if isinstance(consistency, RePaint):
        raise ValueError("RePaint works with the ancestral sampler only, not dpm_solver_pp")
    g = times if times is not None else denoiser.time_grid(steps, grid)
    shape = (cond.shape[0], 1, *cond.shape[2:])
    base = denoiser.from_diffused(torch.zeros(shape, device=cond.device), cond)
    x = randn_per_image(shape, generators, cond.device).to(cond.dtype)  # float64 cond -> float64 sampling
    a, s, lam = g.alpha.tolist(), g.sigma.tolist(), g.lam.tolist()
    history: list[Tensor] = []  # x0 estimates, newest first
    for i in range(len(g)):
        m = constrain_x0(predict_x0(denoiser, x, g.at(i, x.shape[0], x.device), cond, base, clip), base, consistency)
        history = [m, *history[: order - 1]]
        if s[i + 1] == 0.0:  # clean end: e^{-h} = 0, sigma_t = 0, alpha_t = 1
            x = m
        else:
            h, ratio = lam[i + 1] - lam[i], s[i + 1] / s[i]
            if len(history) == 1:
                x = dpmpp_first_order(x, m, ratio, a[i + 1], h)
            elif len(history) == 2:
                x = dpmpp_2m_update(x, m, history[1], ratio, a[i + 1], h, lam[i] - lam[i - 1])
            else:
                x = dpmpp_3m_update(x, m, history[1], history[2], ratio, a[i + 1], h,
                                    lam[i] - lam[i - 1], lam[i - 1] - lam[i - 2])
        if callback is not None:
            callback(i, x, m + base)
    return finalize(x + base, consistency)
