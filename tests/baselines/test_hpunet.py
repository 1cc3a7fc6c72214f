"""HPU-Net baseline: the closed-form Gaussian KL, overfitting one real inpainting pair, samples that
differ inside the hole and agree exactly outside, generator reproducibility, SR conditions,
state_dict round trip, bad configuration."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from meddiff.baselines.hpunet import HPUNet, gaussian_kl
from meddiff.config import ModelConfig
from meddiff.data.degrade import Inpaint, SuperResolution
from meddiff.errors import ConfigError, InputError

from .conftest import mni_crop, psnr


SMALL = ModelConfig(channels=(16, 32, 64), norm_groups=8)


def make(in_channels: int = 2, seed: int = 0, **kw) -> HPUNet:
    torch.manual_seed(seed)
    return HPUNet(SimpleNamespace(**kw), in_channels=in_channels, model_cfg=SMALL)


def inpaint_pair(size: int = 32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x0, model condition, mask) for a real crop with seeded holes covering 20-30% of it."""
    x0 = mni_crop(size)
    deg = Inpaint(coverage=(0.2, 0.3))
    cond, mask = deg(x0, generator=torch.Generator().manual_seed(0))
    return x0, deg.model_condition(cond, mask), mask


def test_gaussian_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mq, mp = torch.randn(2, 500, generator=g, dtype=torch.float64)
    lq, lp = torch.randn(2, 500, generator=g, dtype=torch.float64)
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mq, lq.exp()), torch.distributions.Normal(mp, lp.exp()))
    torch.testing.assert_close(gaussian_kl(mq, lq, mp, lp), ref, rtol=1e-12, atol=1e-12)
    assert torch.equal(gaussian_kl(mq, lq, mq, lq), torch.zeros_like(mq))


def test_overfits_one_real_inpainting_pair():
    x0, cond, mask = inpaint_pair(32)
    model = make(2, 0)
    opts = model.optimisers(2e-3, (0.9, 0.99), 0.0)
    recs = [model.train_step(x0, cond, mask, opts, s) for s in range(250)]
    assert all(math.isfinite(v) for r in recs for v in r.values())
    first, last = np.mean([r["loss"] for r in recs[:10]]), np.mean([r["loss"] for r in recs[-10:]])
    assert last < 0.1 * first
    pred = model.predict(cond, mask, torch.Generator().manual_seed(1))
    hole = mask.bool()
    p_in = psnr(cond[:, :1][hole], x0[hole])
    p_out = psnr(pred[hole], x0[hole])
    print(f"HPUNet overfit inpainting: hole PSNR input {p_in:.2f} dB, output {p_out:.2f} dB; "
          f"last rec {recs[-1]['rec']:.4f} kl {recs[-1]['kl']:.4f}")
    assert p_out > p_in + 10.0
    other = model.predict(cond, mask, torch.Generator().manual_seed(2))
    spread = float((pred - other)[hole].abs().mean())
    print(f"mean |sample 1 - sample 2| in the hole after overfitting: {spread:.4f}")
    assert torch.equal(pred[~hole], other[~hole]) and spread > 0


def test_samples_differ_inside_the_hole_and_agree_exactly_outside():
    x0, cond, mask = inpaint_pair(32)
    model = make(2, 0)
    opts = model.optimisers(2e-3, (0.9, 0.99), 0.0)
    for s in range(20):
        model.train_step(x0, cond, mask, opts, s)
    a = model.predict(cond, mask, torch.Generator().manual_seed(1))
    b = model.predict(cond, mask, torch.Generator().manual_seed(2))
    a2 = model.predict(cond, mask, torch.Generator().manual_seed(1))
    hole = mask.bool()
    assert torch.equal(a, a2)  # same generator, same sample
    assert torch.equal(a[~hole], x0[~hole]) and torch.equal(b[~hole], x0[~hole])
    assert (a[hole] - b[hole]).abs().max() > 1e-3
    mean, std = model.predict_with_uncertainty(cond, mask, torch.Generator().manual_seed(3))
    assert torch.equal(std[~hole], torch.zeros_like(std[~hole])) and std[hole].mean() > 0


def test_sr_condition_trains_and_samples_without_copy_back():
    x0 = mni_crop(16)
    cond, mask = SuperResolution(2.0)(x0)
    model = make(1, 0, channels=(8, 16), latent_scales=2)
    opts = model.optimisers(2e-3, (0.9, 0.99), 0.0)
    recs = [model.train_step(x0, cond, mask, opts, s) for s in range(30)]
    assert recs[-1]["loss"] < recs[0]["loss"]
    a = model.predict(cond, mask, torch.Generator().manual_seed(1))
    b = model.predict(cond, mask, torch.Generator().manual_seed(2))
    assert a.shape == x0.shape and a.min() >= -1 and a.max() <= 1
    assert not torch.equal(a, b)  # every pixel is generated: no copy-back


def test_state_dict_round_trip_gives_identical_predictions():
    x0, cond, mask = inpaint_pair(16)
    a = make(2, 0, channels=(8, 16), latent_scales=2)
    opts = a.optimisers(1e-3, (0.9, 0.99), 0.0)
    for s in range(3):
        a.train_step(x0, cond, mask, opts, s)
    b = make(2, 7, channels=(8, 16), latent_scales=2)
    b.load_state_dict(a.state_dict())
    pa = a.predict(cond, mask, torch.Generator().manual_seed(4))
    pb = b.predict(cond, mask, torch.Generator().manual_seed(4))
    assert torch.equal(pa, pb)


def test_reconstruction_term_is_the_masked_gaussian_nll():
    """rec = sum over hole pixels of (x_hat - x0)^2 / (2 * 0.1^2), per pixel of the batch; KL > 0 untrained."""
    x0, cond, mask = inpaint_pair(16)
    m = make(2, 0, channels=(8, 16), latent_scales=2)
    rec, kl, pred = m.elbo_terms(x0, cond, mask, torch.Generator().manual_seed(0))
    assert kl > 0
    torch.testing.assert_close(rec, ((pred - x0).pow(2) * mask).sum() / x0.numel() / (2 * 0.1**2))
    pred_same = m.elbo_terms(x0, cond, mask, torch.Generator().manual_seed(0))[2]
    assert torch.equal(pred, pred_same)  # posterior draws come from the generator


def test_bad_configuration_and_input_are_named():
    with pytest.raises(ConfigError, match="latent_scales"):
        make(2, 0, channels=(8, 16), latent_scales=3)
    with pytest.raises(ConfigError, match="recon"):
        make(2, 0, channels=(8, 16), latent_scales=2, recon="bce")
    m = make(2, 0, channels=(8, 16), latent_scales=1)
    with pytest.raises(InputError, match=r"\[B, 2, H, W\]"):
        m.predict(torch.zeros(1, 1, 16, 16), torch.ones(1, 1, 16, 16))


def ambiguous_pairs(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """16x16 toy: smooth random context, a fixed 6x6 hole whose content is +0.6 or -0.6 with
    probability 1/2, independent of the context (the condition cannot say which)."""
    ctx = torch.nn.functional.interpolate(torch.rand(n, 1, 4, 4, generator=g) - 0.5, size=(16, 16), mode="bilinear")
    sign = (torch.rand(n, 1, 1, 1, generator=g) < 0.5).float() * 1.2 - 0.6
    mask = torch.zeros(n, 1, 16, 16)
    mask[..., 5:11, 5:11] = 1
    x0 = ctx * (1 - mask) + sign * mask
    return x0, torch.cat([x0 * (1 - mask), mask], 1), mask


def test_sample_diversity_reflects_ambiguity():
    """Trained where the hole is a coin flip, prior samples spread across both answers (a regressor
    would give 0 everywhere); compare the one-pair overfit above (no ambiguity): spread ~0.01."""
    torch.manual_seed(0)
    m = HPUNet(SimpleNamespace(channels=(16, 32), latent_scales=2), 2, ModelConfig(channels=(16, 32), norm_groups=8))
    opts = m.optimisers(2e-3, (0.9, 0.99), 0.0)
    g = torch.Generator().manual_seed(0)
    for s in range(300):
        m.train_step(*ambiguous_pairs(16, g), opts, s)
    x0, cond, mask = ambiguous_pairs(4, g)
    samples = torch.stack([m.predict(cond, mask, torch.Generator().manual_seed(k)) for k in range(16)])
    hole = samples[..., 5:11, 5:11]
    spread = float(hole.std(0).mean())
    print(f"ambiguous toy: per-pixel std across 16 samples in the hole {spread:.3f} (ideal 0.6)")
    assert spread > 0.15
    assert torch.equal(samples[..., :5, :], x0[None].expand_as(samples)[..., :5, :])
