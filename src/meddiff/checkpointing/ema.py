"""The EMA rule of a checkpoint's weights: the decay of each step and the share of the random
initialisation the averaged (sampled) weights still hold. `meddiff.train.ema` keeps the average
during training; sampling reads the rule from the checkpoint's config (`checkpointing.weights.ema_check`).

    theta_ema <- beta_t * theta_ema + (1 - beta_t) * theta        after optimiser step t = 0, 1, ...

with the warm-up (``train.ema_warmup: true``, the default)

    beta_t = min(decay, (1 + t) / (10 + t))

or a constant beta_t = decay (``ema_warmup: false``, meddiff before issue 19; checkpoints whose
stored config lacks the key were trained so and keep that rule, see
`meddiff.checkpointing.formats.ADDED_KEYS`).

Why a warm-up. The EMA after n steps still holds the initial (random) weights with the weight
prod_{t<n} beta_t (`init_share`). With a constant 0.995 that is 0.995^300 = 22% after 300
steps: the averaged model samples noise while the raw model already makes images. With the
warm-up the product is 9! n! / (n + 9)! = 1 / C(n + 9, 9) until the cap: 1e-5 after 10 steps.
Until the cap is reached the weight of step s in the average is about 9 (s + 1)^8 / (n + 1)^9:
a power-function EMA (EDM2, Karras et al. 2024) with exponent 9, i.e. an average over roughly
the last 10% of the run, whatever the run's length; after the cap it is the usual EMA of
length 1 / (1 - decay). We chose this over EDM2's pure power EMA because it keeps the meaning
of ``train.ema_decay`` (the long-run decay every config already states) and needs one scalar
per step; EDM2's post-hoc reconstruction needs several stored averages.
"""

from __future__ import annotations

import math

import numpy as np

WARMUP_OFFSET = 10  # beta_t = min(decay, (1 + t) / (WARMUP_OFFSET + t))
# warn when the EMA still holds more than this share of the initial weights: the shipped demo_sr_x4
# (900 steps of constant decay 0.995) holds 1.1% and beats bicubic by 2.7 dB on Colin27, so 1% warned
# on every use of a good model; the issue-19 failure held 22%
INIT_SHARE_WARN = 0.05


class EMAWarning(UserWarning):
    """The EMA weights still hold a large share of the initial weights (see `init_share_warning`)."""


def ema_decay_at(step: int, decay: float, warmup: bool = True) -> float:
    """beta_t of the (0-based) optimiser step `step`: min(decay, (1 + t) / (10 + t)) with the
    warm-up, else `decay` (see the module docstring)."""
    if not warmup:
        return decay
    return min(decay, (1.0 + step) / (WARMUP_OFFSET + step))


def init_share(steps: int, decay: float, warmup: bool = True) -> float:
    """prod_{t < steps} beta_t: the weight the EMA still gives the initial weights after `steps`
    updates (1 at step 0; a constant decay d gives d^steps)."""
    if steps <= 0:
        return 1.0
    if not warmup:
        return 0.0 if decay == 0.0 else math.exp(steps * math.log(decay))
    t = np.arange(steps, dtype=np.float64)
    betas = np.minimum(decay, (1.0 + t) / (WARMUP_OFFSET + t))
    if np.any(betas == 0.0):
        return 0.0
    return float(np.exp(np.sum(np.log(betas))))


def init_share_warning(steps: int, decay: float, warmup: bool, where: str = "the EMA weights",
                       threshold: float = INIT_SHARE_WARN) -> str | None:
    """A warning text when `init_share` exceeds `threshold` (else None), saying what to do."""
    share = init_share(steps, decay, warmup)
    if share <= threshold:
        return None
    rule = f"min({decay}, (1 + t)/(10 + t))" if warmup else f"a constant {decay}"
    fix = "train longer" if warmup else "train with train.ema_warmup: true (the default), a lower train.ema_decay or longer"
    return (f"{where} still hold {share:.1%} of the initial weights ({steps} steps of EMA decay {rule}): "
            f"samples from them may be noise. {fix[0].upper() + fix[1:]}, or sample the raw weights "
            "(meddiff sample --weights raw).")
