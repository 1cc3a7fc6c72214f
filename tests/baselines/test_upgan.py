"""UP-GAN baseline: the generalised-Gaussian likelihood and variance, overfitting one real SR pair,
uncertainty tracking the error, progressive schedule, state_dict round trip, bad input."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import stats

from meddiff.baselines.upgan import UPGAN, gg_nll, gg_variance
from meddiff.config import ModelConfig
from meddiff.data.degrade import SuperResolution
from meddiff.errors import InputError

from .conftest import mni_crop, psnr

STEPS_TOY = 300
SMALL = ModelConfig(channels=(16, 32, 64), norm_groups=8)


# -- generalised Gaussian --------------------------------------------------------------------

def test_gg_nll_is_gaussian_for_beta_2_and_laplace_for_beta_1():
    g = torch.Generator().manual_seed(0)
    x, mu = torch.randn(1000, generator=g, dtype=torch.float64), torch.randn(1000, generator=g, dtype=torch.float64)
    alpha = torch.rand(1000, generator=g, dtype=torch.float64) + 0.1
    two, one = torch.full_like(alpha, 2.0), torch.ones_like(alpha)
    gauss = -torch.distributions.Normal(mu, alpha / math.sqrt(2)).log_prob(x)
    laplace = -torch.distributions.Laplace(mu, alpha).log_prob(x)
    torch.testing.assert_close(gg_nll(x, mu, alpha, two), gauss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gg_nll(x, mu, alpha, one), laplace, rtol=1e-12, atol=1e-12)
    # any shape: scipy's gennorm
    beta = torch.rand(1000, generator=g, dtype=torch.float64) * 3 + 0.3
    ref = -stats.gennorm.logpdf(x.numpy(), beta.numpy(), loc=mu.numpy(), scale=alpha.numpy())
    np.testing.assert_allclose(gg_nll(x, mu, alpha, beta).numpy(), ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("beta", [0.7, 1.0, 2.0, 4.0])
def test_gg_variance_matches_scipy_and_monte_carlo(beta):
    alpha = 0.3
    v = float(gg_variance(torch.tensor(alpha, dtype=torch.float64), torch.tensor(beta, dtype=torch.float64)))
    assert v == pytest.approx(stats.gennorm.var(beta, scale=alpha), rel=1e-10)
    s = stats.gennorm.rvs(beta, scale=alpha, size=400_000, random_state=np.random.default_rng(1))
    assert v == pytest.approx(s.var(), rel=0.02)


def test_gg_nll_gradient_is_finite_at_zero_residual():
    mu = torch.zeros(3, requires_grad=True)
    alpha, beta = torch.full((3,), 0.5, requires_grad=True), torch.tensor([0.3, 1.0, 2.0], requires_grad=True)
    gg_nll(torch.zeros(3), mu, alpha, beta).sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (mu, alpha, beta))


# -- the model -------------------------------------------------------------------------------

def make(seed: int = 0, **kw) -> UPGAN:
    torch.manual_seed(seed)
    return UPGAN(SimpleNamespace(**kw), in_channels=1, model_cfg=SMALL)


def test_overfits_one_real_sr_pair():
    x0 = mni_crop(32)
    cond, mask = SuperResolution(4.0)(x0)
    model = make(0, stages=2)
    opts = model.optimisers(2e-3, (0.9, 0.99), 0.0)
    losses = [model.train_step(x0, cond, mask, opts, s) for s in range(250)]
    assert all(math.isfinite(v) for rec in losses for v in rec.values())
    first, last = np.mean([r["l1"] for r in losses[:10]]), np.mean([r["l1"] for r in losses[-10:]])
    assert last < 0.3 * first
    pred = model.predict(cond, mask)
    assert pred.shape == x0.shape and pred.min() >= -1 and pred.max() <= 1
    p_in, p_out = psnr(cond, x0), psnr(pred, x0)
    print(f"UP-GAN overfit SR x4: input PSNR {p_in:.2f} dB, output {p_out:.2f} dB")
    assert p_out > p_in + 6.0


def toy_pairs(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(target, cond, noisy): cond is a smooth random field; where cond > 0 the target is cond plus
    unpredictable noise (std 0.3), elsewhere exactly cond. The network sees where the noise is (the
    sign of cond), not what it is."""
    cond = torch.nn.functional.interpolate(torch.rand(n, 1, 4, 4, generator=g) * 1.6 - 0.8, size=(16, 16), mode="bilinear")
    noisy = cond > 0
    return cond + torch.randn(n, 1, 16, 16, generator=g) * 0.3 * noisy, cond, noisy


def test_uncertainty_is_higher_where_the_error_is_higher():
    g = torch.Generator().manual_seed(0)
    # gg_weight 1 (default 1e-3) so the shared trunk learns the uncertainty within the short budget
    model = make(1, stages=2, channels=(16, 32), gg_weight=1.0, disc_layers=1)
    opts = model.optimisers(2e-3, (0.9, 0.99), 0.0)
    for s in range(STEPS_TOY):
        x0, cond, _ = toy_pairs(8, g)
        model.train_step(x0, cond, torch.ones_like(x0), opts, s)
    x0, cond, noisy = toy_pairs(16, g)
    mean, std = model.predict_with_uncertainty(cond, torch.ones_like(x0))
    err = (mean - x0).abs()
    err_ratio = float(err[noisy].mean() / err[~noisy].mean())
    std_ratio = float(std[noisy].mean() / std[~noisy].mean())
    rho = stats.spearmanr(std.flatten().numpy(), err.flatten().numpy()).statistic
    print(f"toy: error ratio noisy/clean {err_ratio:.2f}, std ratio {std_ratio:.2f}, Spearman(std, |err|) {rho:.2f}")
    assert err_ratio > 3.0
    assert std_ratio > 2.5
    assert rho > 0.4


def test_progressive_schedule_trains_one_stage_at_a_time():
    x0 = mni_crop(16)
    cond, mask = SuperResolution(2.0)(x0)
    model = make(0, stages=3, channels=(8, 16), stage_steps=2, disc_layers=1)
    opts = model.optimisers(1e-3, (0.9, 0.99), 0.0)
    before = [{k: v.clone() for k, v in g.state_dict().items()} for g in model.generators]

    def changed(m: int) -> bool:
        return any(not torch.equal(v, before[m][k]) for k, v in model.generators[m].state_dict().items())

    stages = [model.train_step(x0, cond, mask, opts, s)["stage"] for s in range(2)]
    assert stages == [1.0, 1.0] and changed(0) and not changed(1) and not changed(2)
    before = [{k: v.clone() for k, v in g.state_dict().items()} for g in model.generators]
    assert model.train_step(x0, cond, mask, opts, 3)["stage"] == 2.0
    assert not changed(0) and changed(1) and not changed(2)
    assert model.train_step(x0, cond, mask, opts, 100)["stage"] == 3.0


def test_state_dict_round_trip_gives_identical_predictions():
    x0 = mni_crop(16)
    cond, mask = SuperResolution(2.0)(x0)
    a = make(0, channels=(8, 16), disc_layers=1)
    opts = a.optimisers(1e-3, (0.9, 0.99), 0.0)
    for s in range(3):
        a.train_step(x0, cond, mask, opts, s)
    b = make(5, channels=(8, 16), disc_layers=1)
    assert not torch.equal(a.predict(cond, mask), b.predict(cond, mask))
    b.load_state_dict(a.state_dict())
    ma, sa = a.predict_with_uncertainty(cond, mask, torch.Generator().manual_seed(3))
    mb, sb = b.predict_with_uncertainty(cond, mask, torch.Generator().manual_seed(3))
    assert torch.equal(ma, mb) and torch.equal(sa, sb)


def test_inpainting_copies_known_pixels_with_zero_uncertainty():
    x0 = mni_crop(16)
    mask = torch.zeros_like(x0)
    mask[..., 4:10, 5:12] = 1
    cond = torch.cat([x0 * (1 - mask), mask], 1)
    torch.manual_seed(0)
    model = UPGAN(SimpleNamespace(channels=(8, 16)), in_channels=2, model_cfg=SMALL)
    mean, std = model.predict_with_uncertainty(cond, mask)
    known = mask == 0
    assert torch.equal(mean[known], x0[known]) and torch.equal(std[known], torch.zeros_like(std[known]))
    assert (std[~known] > 0).all()


def test_bad_input_names_the_shape():
    model = make(0, channels=(8, 16, 32))
    with pytest.raises(InputError, match=r"\[B, 1, H, W\]"):
        model.predict(torch.zeros(1, 2, 16, 16), torch.ones(1, 1, 16, 16))
    with pytest.raises(InputError, match="divisible by 4"):
        model.predict(torch.zeros(1, 1, 18, 16), torch.ones(1, 1, 18, 16))
