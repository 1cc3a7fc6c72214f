"""The simple loss for eps/x0/v targets (residual or not) and the Min-SNR-5 weights."""

import numpy as np
import pytest
import torch
from torch import nn

from meddiff.diffusion import ddpm
from meddiff.diffusion.denoiser import DDPMDenoiser
from meddiff.diffusion.loss import diffusion_loss, min_snr_weight, sample_timesteps
from meddiff.diffusion.schedule import DiscreteSchedule, linear_betas

T = 100
SCHED = DiscreteSchedule(linear_betas(T, 1e-3, 0.2))
AB = np.cumprod(1 - np.linspace(1e-3, 0.2, T))


class FixedOutput(nn.Module):
    """Returns a fixed tensor and records what it was called with."""

    def __init__(self, out):
        super().__init__()
        self.out = out
        self.calls = []

    def forward(self, x, k):
        self.calls.append((x.clone(), k.clone()))
        return self.out


def _data(seed=0, b=4):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(b, 1, 6, 5, generator=g) * 2 - 1
    cond = torch.rand(b, 1, 6, 5, generator=g) * 2 - 1
    out = torch.randn(b, 1, 6, 5, generator=g)
    return x0, cond, out


def _target(pred, z0, k, eps):
    ab = torch.tensor(AB[k.numpy()], dtype=torch.float32).view(-1, 1, 1, 1)
    return {"eps": eps, "x0": z0, "v": ab.sqrt() * eps - (1 - ab).sqrt() * z0}[pred]


@pytest.mark.parametrize("pred", ["eps", "x0", "v"])
@pytest.mark.parametrize("residual", [False, True])
def test_loss_is_mse_to_the_target_of_the_parameterisation(pred, residual):
    x0, cond, out = _data()
    net = FixedOutput(out)
    den = DDPMDenoiser(net, SCHED, pred, residual)
    k = torch.tensor([0, 9, 50, 99])
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(7))
    loss = diffusion_loss(den, x0, cond, k=k, eps=eps)
    z0 = x0 - cond if residual else x0
    want = ((out - _target(pred, z0, k, eps)) ** 2).mean()
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)
    # the network saw cat(x_t, cond) and the timesteps
    (x_in, k_in), = net.calls
    assert torch.equal(k_in, k)
    ab = torch.tensor(AB[k.numpy()], dtype=torch.float32).view(-1, 1, 1, 1)
    torch.testing.assert_close(x_in[:, :1], ab.sqrt() * z0 + (1 - ab).sqrt() * eps, rtol=1e-5, atol=1e-6)
    assert torch.equal(x_in[:, 1:], cond)


@pytest.mark.parametrize("pred", ["eps", "x0", "v"])
def test_exact_network_has_zero_loss(pred):
    x0, cond, _ = _data(1)
    k = torch.tensor([3, 30, 60, 97])
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(8))
    den = DDPMDenoiser(FixedOutput(_target(pred, x0, k, eps)), SCHED, pred)
    assert diffusion_loss(den, x0, cond, k=k, eps=eps).item() < 1e-12


def test_generator_draws_timesteps_then_noise_reproducibly():
    x0, cond, out = _data(2)
    den = DDPMDenoiser(FixedOutput(out), SCHED, "eps")
    a = diffusion_loss(den, x0, cond, generator=torch.Generator().manual_seed(5))
    b = diffusion_loss(den, x0, cond, generator=torch.Generator().manual_seed(5))
    c = diffusion_loss(den, x0, cond, generator=torch.Generator().manual_seed(6))
    assert a.item() == b.item() and a.item() != c.item()
    g = torch.Generator().manual_seed(5)
    k = torch.randint(0, T, (4,), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    assert a.item() == pytest.approx(((out - eps) ** 2).mean().item(), rel=1e-6)
    assert torch.equal(den.net.calls[0][1], k)


def test_sample_timesteps_covers_the_whole_range_uniformly():
    k = sample_timesteps(50_000, 10, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert k.dtype == torch.int64 and int(k.min()) == 0 and int(k.max()) == 9
    counts = torch.bincount(k, minlength=10).double()
    assert torch.all((counts - 5000).abs() < 5 * np.sqrt(5000 * 0.9))


@pytest.mark.parametrize("pred", ["eps", "x0", "v"])
def test_min_snr_weight_is_min_snr_5_in_x0_units(pred):
    """w * |output error|^2 == min(snr, 5) * |x0 error|^2 for an error in the network output."""
    k = torch.arange(T)
    g = torch.Generator().manual_seed(9)
    x0 = torch.rand(T, 1, 3, 3, generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn(T, 1, 3, 3, generator=g, dtype=torch.float64)
    xt = ddpm.q_sample(SCHED, x0, k, eps)
    true_out = {"eps": eps, "x0": x0, "v": ddpm.v_target(SCHED, x0, k, eps)}[pred]
    delta = 1e-3 * torch.randn(true_out.shape, generator=g, dtype=torch.float64)
    _, x0_hat = ddpm.split_prediction(SCHED, pred, true_out + delta, xt, k)
    out_err = delta.pow(2).flatten(1).sum(1)
    x0_err = (x0_hat - x0).pow(2).flatten(1).sum(1)
    snr = torch.tensor(AB / (1 - AB))
    w = min_snr_weight(snr, pred)
    torch.testing.assert_close(w * out_err, torch.clamp(snr, max=5.0) * x0_err, rtol=1e-6, atol=0)


def test_min_snr_weights_on_known_values():
    snr = torch.tensor([0.5, 5.0, 20.0], dtype=torch.float64)
    torch.testing.assert_close(min_snr_weight(snr, "x0"), torch.tensor([0.5, 5.0, 5.0], dtype=torch.float64))
    torch.testing.assert_close(min_snr_weight(snr, "eps"), torch.tensor([1.0, 1.0, 0.25], dtype=torch.float64))
    torch.testing.assert_close(min_snr_weight(snr, "v"), torch.tensor([0.5 / 1.5, 5 / 6, 5 / 21], dtype=torch.float64))


@pytest.mark.parametrize("pred", ["eps", "x0", "v"])
def test_min_snr_loss_weights_each_sample_by_its_timestep(pred):
    x0, cond, out = _data(3)
    k = torch.tensor([0, 20, 60, 99])
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(10))
    den = DDPMDenoiser(FixedOutput(out), SCHED, pred)
    got = diffusion_loss(den, x0, cond, k=k, eps=eps, weighting="min_snr")
    snr = AB[k.numpy()] / (1 - AB[k.numpy()])
    w = {"eps": np.minimum(snr, 5) / snr, "x0": np.minimum(snr, 5), "v": np.minimum(snr, 5) / (snr + 1)}[pred]
    per = ((out - _target(pred, x0, k, eps)) ** 2).flatten(1).mean(1).double().numpy()
    assert got.item() == pytest.approx(float((w * per).mean()), rel=1e-5)
