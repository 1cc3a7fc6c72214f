"""Exact denoisers of data whose distribution is known in closed form (per dimension, independent)."""

from __future__ import annotations

import pytest
import torch

from meddiff.vdm.loss import level_values
from meddiff.vdm.schedule import alpha, sigma


def _b(v, like):
    return v.reshape(-1, *([1] * (like.ndim - 1))) if v.ndim else v


def gaussian_eps_hat(mu: float, s: float):
    """eps_hat(z, gamma) = (z - alpha E[f|z]) / sigma for f ~ N(mu, s^2): E[f|z] = mu + alpha s^2 (z - alpha mu)/(alpha^2 s^2 + sigma^2)."""
    def score(z, g, cond=None):
        a, sg = _b(alpha(g), z), _b(sigma(g), z)
        f_hat = mu + a * s**2 * (z - a * mu) / (a**2 * s**2 + sg**2)
        return (z - a * f_hat) / sg
    return score


def levels_eps_hat(probs: torch.Tensor):
    """eps_hat for f = level_values(V)[x], x ~ Categorical(probs): E[f|z] = sum_v w_v f_v, w_v ~ p_v N(z; alpha f_v, sigma^2)."""
    lv = level_values(probs.numel(), torch.float64)
    logp = torch.log(probs.double())

    def score(z, g, cond=None):
        a, sg = _b(alpha(g), z), _b(sigma(g), z)
        zz, aa, ss = z.double()[..., None], a.double()[..., None], sg.double()[..., None]
        w = torch.softmax(logp - 0.5 * ((zz - aa * lv) / ss) ** 2, dim=-1)
        f_hat = (w * lv).sum(-1).to(z.dtype)
        return (z - a * f_hat) / sg
    return score


def discretised_gaussian(vocab: int, mean: float, std: float) -> torch.Tensor:
    v = torch.arange(vocab, dtype=torch.float64)
    p = torch.exp(-0.5 * ((v - mean) / std) ** 2)
    return p / p.sum()


@pytest.fixture
def gauss():
    return gaussian_eps_hat


@pytest.fixture
def levels_denoiser():
    return levels_eps_hat
