"""The low-dose radiograph model (meddiff.data.low_dose) against its own equations."""

from __future__ import annotations

import pytest
import torch

from meddiff.config import TaskConfig
from meddiff.data.degrade import Denoise, build_degradation
from meddiff.data.low_dose import LowDose, low_dose
from meddiff.errors import ConfigError


@pytest.mark.parametrize("x0_value, d", [(-0.5, 0.5), (0.0, 0.2), (0.5, 0.1)])
def test_noise_variance_and_mean_follow_the_delta_method(x0_value, d):
    model = LowDose(photons=2.0e4, electronic_std=10.0)
    x0 = torch.full((4, 1, 64, 64), x0_value)
    y = low_dose(x0, torch.full((4,), d), model, torch.Generator().manual_seed(0))
    predicted = model.variance(torch.tensor(x0_value), d).item()
    assert y.var().item() == pytest.approx(predicted, rel=0.1)  # eq. 4
    # E[-log N] = -log E[N] + Var[N] / (2 E[N]^2) to second order: the log transform's own bias
    bias = predicted * model.p_max / 4
    assert y.mean().item() == pytest.approx(x0_value + bias, abs=4 * predicted**0.5 / 128 + 1e-3)


def test_noise_grows_where_the_film_is_bright_and_as_the_dose_falls():
    model = LowDose()
    assert model.variance(torch.tensor(0.8), 0.1) > model.variance(torch.tensor(-0.8), 0.1)
    assert model.variance(torch.tensor(0.0), 0.05) > model.variance(torch.tensor(0.0), 0.5)
    x0 = torch.zeros(2, 1, 48, 48)
    g = torch.Generator().manual_seed(1)
    low, high = low_dose(x0, torch.tensor([0.05, 0.5]), model, g).unbind(0)
    assert low.std() > 2 * high.std()


def test_doses_are_log_uniform_in_the_configured_range():
    model = LowDose(dose=(0.05, 0.5))
    d = model.draw_dose(20000, torch.rand(20000, generator=torch.Generator().manual_seed(2)))
    assert d.min() >= 0.05 and d.max() <= 0.5
    # log-uniform: the median is the geometric mean of the ends
    assert d.median().item() == pytest.approx((0.05 * 0.5) ** 0.5, rel=0.05)


def test_a_share_of_zero_keeps_the_gaussian_pairs_bit_for_bit():
    x0 = torch.rand(3, 1, 16, 16) * 2 - 1
    plain = Denoise(noise_std=(0.05, 0.2), salt_pepper=(0.0, 0.02))
    g = torch.Generator().manual_seed(3)
    sigma, p = plain.draw_levels(3, g, x0)
    expected = plain.apply(x0, sigma, p, g)
    got, _ = plain(x0, torch.Generator().manual_seed(3))
    assert torch.equal(got, expected)


def test_a_share_of_one_gives_signal_dependent_noise():
    x0 = torch.cat([torch.full((8, 1, 32, 32), -0.8), torch.full((8, 1, 32, 32), 0.8)])
    deg = build_degradation(TaskConfig(kind="denoise", noise_std=(0.0, 0.0), salt_pepper=(0.0, 0.0), low_dose_share=1.0))
    y, mask = deg(x0, torch.Generator().manual_seed(4))
    assert torch.all(mask == 1)
    dark, bright = (y - x0)[:8].std(), (y - x0)[8:].std()
    assert bright > 3 * dark  # additive Gaussian noise would give equal spreads


def test_bad_low_dose_settings_name_the_config_key():
    with pytest.raises(ConfigError, match="task.dose_fraction"):
        build_degradation(TaskConfig(kind="denoise", dose_fraction=(0.0, 0.5)))
    with pytest.raises(ConfigError, match="task.low_dose_share"):
        build_degradation(TaskConfig(kind="denoise", low_dose_share=1.5))
