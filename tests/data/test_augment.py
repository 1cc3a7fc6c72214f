"""Acquisition and appearance augmentations (meddiff.data.augment) and synthetic contrasts
(meddiff.data.synth): each part's physics or statistics, determinism, and the config wiring."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from meddiff import config as config_mod
from meddiff.data.augment import (Acquisition, Appearance, acquisition_changed, add_noise, bias_field, gamma_contrast,
                                  gaussian_blur, kspace_truncate)
from meddiff.data.synth import render, smooth_field, synth_shapes
from meddiff.errors import ConfigError


def _bandlimited(n: int = 64, keep: int = 8, seed: int = 0) -> torch.Tensor:
    """A real image whose spectrum lives inside the central keep x keep frequencies, in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    k = torch.zeros(n, n, dtype=torch.complex128)
    c = n // 2
    k[c - keep // 2 : c + keep // 2, c - keep // 2 : c + keep // 2] = torch.randn(keep, keep, dtype=torch.complex128, generator=g)
    img = torch.fft.ifft2(torch.fft.ifftshift(k)).real
    img = (img - img.min()) / (img.max() - img.min()) * 1.6 - 0.8
    return img[None, None].float()


def test_kspace_truncation_keeps_the_acquired_frequencies_exactly():
    x = _bandlimited(64, 8)
    lr = kspace_truncate(x, (16, 16))
    # the 16x16 image holds all of x's frequencies: zero-filled back to 64x64 it is x again
    u = (lr.double() + 1) / 2
    k = torch.fft.fftshift(torch.fft.fft2(u, norm="ortho"), dim=(-2, -1))
    full = torch.zeros(1, 1, 64, 64, dtype=torch.complex128)
    full[..., 32 - 8 : 32 + 8, 32 - 8 : 32 + 8] = k * math.sqrt(64 * 64 / (16 * 16))
    back = torch.fft.ifft2(torch.fft.ifftshift(full, dim=(-2, -1)), norm="ortho").abs() * 2 - 1
    # magnitude: exact where the image is positive in u (it is, by construction: u in [0.1, 0.9])
    torch.testing.assert_close(back.float(), x, atol=1e-5, rtol=0)


def test_kspace_truncation_keeps_the_mean_and_a_constant():
    x = torch.full((2, 1, 40, 40), 0.3)
    torch.testing.assert_close(kspace_truncate(x, (10, 10)), torch.full((2, 1, 10, 10), 0.3), atol=1e-6, rtol=0)
    y = _bandlimited(64, 30, seed=3)
    assert abs(float(kspace_truncate(y, (16, 16)).mean()) - float(y.mean())) < 0.02


def test_rician_noise_statistics_in_the_background():
    g = torch.Generator().manual_seed(0)
    x = -torch.ones(1, 1, 256, 256)  # background: u = 0
    sigma = torch.full((1, 1, 1, 1), 0.05)
    u = (add_noise(x, sigma, "rician", g) + 1) / 2
    # Rayleigh: mean sigma sqrt(pi/2), second moment 2 sigma^2
    assert float(u.mean()) == pytest.approx(0.05 * math.sqrt(math.pi / 2), rel=0.03)
    assert float((u**2).mean()) == pytest.approx(2 * 0.05**2, rel=0.03)
    gauss = (add_noise(torch.zeros(1, 1, 256, 256), sigma, "gaussian", g) + 1) / 2 - 0.5
    assert float(gauss.std()) == pytest.approx(0.05, rel=0.03) and abs(float(gauss.mean())) < 0.002
    with pytest.raises(ConfigError, match="noise_kind"):
        add_noise(x, sigma, "poisson", g)


def test_gamma_bias_and_blur_properties():
    x = _bandlimited(32, 8)
    torch.testing.assert_close(gamma_contrast(x, torch.ones(1, 1, 1, 1)), x, atol=1e-6, rtol=0)
    assert float(gamma_contrast(torch.zeros(1, 1, 2, 2), torch.full((1, 1, 1, 1), 2.0)).mean()) == pytest.approx(-0.5)
    g = torch.Generator().manual_seed(1)
    f = bias_field((3, 1, 32, 32), torch.full((3, 1, 1, 1), 0.3), g, x)
    assert (f > 0).all() and float(f.log().std()) < 0.6
    assert float((f[..., 1:, :] / f[..., :-1, :]).log().abs().max()) < 0.1  # smooth: < 10% change per pixel
    blurred = gaussian_blur(x, torch.tensor([1.5]))
    assert float(blurred.mean()) == pytest.approx(float(x.mean()), abs=0.01) and float(blurred.std()) < float(x.std())
    torch.testing.assert_close(gaussian_blur(x, torch.tensor([0.0])), x)


def test_acquisition_is_seeded_per_generator_and_matches_the_plain_sr_without_variety():
    from meddiff.data.degrade import SuperResolution

    x = _bandlimited(64, 20).repeat(3, 1, 1, 1)
    plain = Acquisition(factor=4.0)
    torch.testing.assert_close(plain(x)[0], SuperResolution(4.0)(x)[0])
    acq = Acquisition(factor=4.0, kernels=("bicubic", "kspace"), blur=(0, 0.5), hr_noise=(0, 0.02), lr_noise=(0, 0.02))
    a = acq(x, torch.Generator().manual_seed(7))[0]
    b = acq(x, torch.Generator().manual_seed(7))[0]
    c = acq(x, torch.Generator().manual_seed(8))[0]
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c) and a.shape == x.shape and a.abs().max() <= 1
    with pytest.raises(ConfigError, match="sr_kernels"):
        Acquisition(kernels=("nearest",))


def test_appearance_and_synthetic_images_are_in_range_and_seeded():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a, b = synth_shapes(64, g1), synth_shapes(64, g2)
    torch.testing.assert_close(a, b)
    assert a.shape == (1, 64, 64) and float(a.min()) == pytest.approx(-1) and float(a.max()) == pytest.approx(1)
    app = Appearance(gamma=(0.5, 2.0), bias=0.3)
    y = app(a[None], torch.Generator().manual_seed(0))
    assert y.shape == (1, 1, 64, 64) and y.min() >= -1 - 1e-6 and y.max() <= 1 + 1e-6
    f = smooth_field((64, 64), 8.0, torch.Generator().manual_seed(0))
    assert float(f.std()) == pytest.approx(1.0, rel=1e-4)
    # the tissue mixture: pure tissue k renders as its mean (no texture), so contrast order follows the means
    probs = torch.zeros(3, 8, 8)
    probs[0, :, :4], probs[2, :, 4:] = 1, 1
    img = render(probs, torch.tensor([0.9, 0.5, 0.2]), torch.zeros(3), torch.Generator().manual_seed(0))
    assert float(img[0, 0, 0]) == pytest.approx(1.0) and float(img[0, 0, 7]) == pytest.approx(-1.0)


def test_augment_config_section_round_trips_and_is_validated():
    cfg = config_mod.from_dict({"augment": {"sr_kernels": ["bicubic", "kspace"], "gamma": [0.7, 1.4], "synth_fraction": 0.5}})
    assert config_mod.from_dict(config_mod.to_dict(cfg)) == cfg and acquisition_changed(cfg.augment)
    assert not acquisition_changed(config_mod.from_dict({}).augment)
    with pytest.raises(ConfigError, match="augment.noise_kind"):
        config_mod.from_dict({"augment": {"noise_kind": "poisson"}})


def test_shipped_general_config_loads():
    from pathlib import Path

    cfg = config_mod.load(Path(__file__).resolve().parents[2] / "configs" / "sr_x4_general.yaml")
    assert cfg.augment.synth_fraction > 0 and cfg.train.init_from.endswith("demo_sr_x4.safetensors")


def test_mixed_pairs_replace_a_fraction_with_synthetic_images(tmp_path):
    from meddiff.data.dataset import PairDataset
    from meddiff.data.degrade import SuperResolution
    from meddiff.data.prepare import PrepareOptions, prepare
    from meddiff.data.samples import samples_dir
    from meddiff.data.synth import MixedPairs

    out = prepare(samples_dir("mni152"), tmp_path / "p", PrepareOptions(size=32), progress=False).output
    real = PairDataset(out, "train", SuperResolution(4.0), crop=16, train=True)
    torch.manual_seed(0)
    mixed = MixedPairs(real, fraction=0.5, shapes=1.0, appearance=Appearance(gamma=(0.8, 1.25)))
    cases = [mixed[i].case_id for i in range(40)]
    assert 8 < sum(c == "synthetic" for c in cases) < 32 and len(mixed) == len(real)
    p = mixed[0]
    assert p.x0.shape == p.cond.shape == (1, 16, 16)
    torch.manual_seed(0)
    again = MixedPairs(real, fraction=0.5, shapes=1.0, appearance=Appearance(gamma=(0.8, 1.25)))
    assert [again[i].case_id for i in range(40)] == cases  # torch.manual_seed makes the mixture reproducible
