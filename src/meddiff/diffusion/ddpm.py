"""DDPM equations (Ho et al. 2020; Med-cDiff, Hung et al. 2023): one function per equation.

Tensors: images ``[B, C, *spatial]``; per-sample timesteps ``k`` are int64 ``[B]`` indexing the
schedule arrays (k = t - 1). Schedule values are gathered in float64 and cast to the image dtype.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from .schedule import DiscreteSchedule

Prediction = Literal["eps", "x0", "v"]


def _at(values: Tensor, k: Tensor, like: Tensor) -> Tensor:
    """values[k] reshaped to broadcast against `like` ([B, 1, 1, ...]) in like's dtype/device."""
    out = values.to(like.device)[k.to(like.device)]
    return out.view(-1, *([1] * (like.ndim - 1))).to(like.dtype)


def q_sample(sched: DiscreteSchedule, x0: Tensor, k: Tensor, eps: Tensor) -> Tensor:
    """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps  (Ho et al. eq. 4)."""
    ab = sched.alpha_bar
    return _at(ab.sqrt(), k, x0) * x0 + _at((1 - ab).sqrt(), k, x0) * eps


def q_posterior_mean(sched: DiscreteSchedule, x0: Tensor, x_t: Tensor, k: Tensor) -> Tensor:
    """mu~_t(x_t, x0) = sqrt(ab_{t-1}) beta_t/(1-ab_t) x0 + sqrt(alpha_t)(1-ab_{t-1})/(1-ab_t) x_t  (eq. 7)."""
    ab = sched.alpha_bar
    ab_prev = torch.cat([torch.ones(1, dtype=ab.dtype), ab[:-1]])
    c0 = ab_prev.sqrt() * sched.betas / (1 - ab)
    ct = sched.alphas.sqrt() * (1 - ab_prev) / (1 - ab)
    return _at(c0, k, x_t) * x0 + _at(ct, k, x_t) * x_t


def posterior_variance(sched: DiscreteSchedule) -> Tensor:
    """beta~_t = (1 - ab_{t-1}) / (1 - ab_t) beta_t  (eq. 7); [T], float64."""
    ab = sched.alpha_bar
    ab_prev = torch.cat([torch.ones(1, dtype=ab.dtype), ab[:-1]])
    return (1 - ab_prev) / (1 - ab) * sched.betas


def p_mean_from_eps(sched: DiscreteSchedule, x_t: Tensor, k: Tensor, eps_hat: Tensor) -> Tensor:
    """mu_theta = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - ab_t) eps_theta)  (eq. 11; Med-cDiff eq. for p(x_{t-1}|x_t, y))."""
    coef = sched.betas / (1 - sched.alpha_bar).sqrt()
    return (x_t - _at(coef, k, x_t) * eps_hat) / _at(sched.alphas.sqrt(), k, x_t)


def x0_from_eps(sched: DiscreteSchedule, x_t: Tensor, k: Tensor, eps: Tensor) -> Tensor:
    """x0 = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t)  (eq. 4 solved for x0)."""
    ab = sched.alpha_bar
    return (x_t - _at((1 - ab).sqrt(), k, x_t) * eps) / _at(ab.sqrt(), k, x_t)


def eps_from_x0(sched: DiscreteSchedule, x_t: Tensor, k: Tensor, x0: Tensor) -> Tensor:
    """eps = (x_t - sqrt(ab_t) x0) / sqrt(1 - ab_t)  (eq. 4 solved for eps)."""
    ab = sched.alpha_bar
    return (x_t - _at(ab.sqrt(), k, x_t) * x0) / _at((1 - ab).sqrt(), k, x_t)


def v_target(sched: DiscreteSchedule, x0: Tensor, k: Tensor, eps: Tensor) -> Tensor:
    """v = sqrt(ab_t) eps - sqrt(1 - ab_t) x0  (Salimans & Ho 2022, v-prediction)."""
    ab = sched.alpha_bar
    return _at(ab.sqrt(), k, x0) * eps - _at((1 - ab).sqrt(), k, x0) * x0


def x0_from_v(sched: DiscreteSchedule, x_t: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """x0 = sqrt(ab_t) x_t - sqrt(1 - ab_t) v."""
    ab = sched.alpha_bar
    return _at(ab.sqrt(), k, x_t) * x_t - _at((1 - ab).sqrt(), k, x_t) * v


def x0_of_prediction(sched: DiscreteSchedule, prediction: Prediction, out: Tensor, x_t: Tensor, k: Tensor) -> Tensor:
    """Network output in its parameterisation -> x0_hat (what the Denoiser returns)."""
    if prediction == "eps":
        return x0_from_eps(sched, x_t, k, out)
    if prediction == "x0":
        return out
    if prediction == "v":
        return x0_from_v(sched, x_t, k, out)
    raise ValueError(f"unknown prediction {prediction!r}; expected eps, x0 or v")


def split_prediction(sched: DiscreteSchedule, prediction: Prediction, out: Tensor, x_t: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
    """Network output in its parameterisation -> (eps_hat, x0_hat)."""
    if prediction == "eps":
        return out, x0_from_eps(sched, x_t, k, out)
    if prediction == "x0":
        return eps_from_x0(sched, x_t, k, out), out
    if prediction == "v":
        x0 = x0_from_v(sched, x_t, k, out)
        return eps_from_x0(sched, x_t, k, x0), x0
    raise ValueError(f"unknown prediction {prediction!r}; expected eps, x0 or v")
