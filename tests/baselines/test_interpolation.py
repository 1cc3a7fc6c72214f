"""Interpolation baselines: accuracy on smooth images, shapes, types, clamping, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from meddiff.baselines import interpolate_baseline
from meddiff.errors import InputError
from meddiff.metrics.image import psnr

torch.set_num_threads(1)


def _smooth(n: int = 64) -> np.ndarray:
    y, x = np.mgrid[:n, :n] / n
    return 0.6 * np.sin(2 * np.pi * (1.5 * x + 0.5 * y)) + 0.3 * np.cos(2 * np.pi * 2 * y)


def test_bicubic_beats_bilinear_beats_nearest_on_a_smooth_image():
    hr = _smooth()
    # box-average x4 (what an anti-aliased downsample of a smooth image does); the SR
    # degradation itself lives in meddiff.data.degrade.
    lr = F.avg_pool2d(torch.from_numpy(hr)[None, None], 4)[0, 0].numpy()
    scores = {m: psnr(interpolate_baseline(lr, hr.shape, m), hr, 2.0) for m in ("nearest", "bilinear", "bicubic")}
    assert scores["bicubic"] > scores["bilinear"] > scores["nearest"] + 3
    assert scores["bicubic"] > 30


def test_keeps_type_rank_and_dtype():
    lr = np.zeros((8, 8))
    out = interpolate_baseline(lr, (32, 24), "bilinear")
    assert isinstance(out, np.ndarray) and out.shape == (32, 24) and out.dtype == np.float32
    t = torch.zeros(2, 3, 8, 8, dtype=torch.float64)
    out = interpolate_baseline(t, (16, 16), "bicubic")
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3, 16, 16) and out.dtype == torch.float64


def test_constant_image_is_preserved_and_overshoot_is_clamped():
    np.testing.assert_allclose(interpolate_baseline(np.full((6, 6), 0.25), (24, 24), "bicubic"), 0.25, atol=1e-6)
    step = np.where(np.arange(8) < 4, -1.0, 1.0)[None].repeat(8, 0)
    unclamped = interpolate_baseline(step, (32, 32), "bicubic", value_range=None)
    assert unclamped.max() > 1.01  # bicubic rings at the step...
    clamped = interpolate_baseline(step, (32, 32), "bicubic")
    assert clamped.max() == 1.0 and clamped.min() == -1.0  # ...clamped to [-1, 1]


def test_bad_method_and_shape_are_named():
    with pytest.raises(InputError, match=r"unknown interpolation method 'lanczos'"):
        interpolate_baseline(np.zeros((4, 4)), (8, 8), "lanczos")
    with pytest.raises(InputError, match=r"\[h, w\] or \[B, C, h, w\], got shape \(1, 4, 4\)"):
        interpolate_baseline(np.zeros((1, 4, 4)), (8, 8))


def test_matches_the_sr_degradation_upsampling():
    degrade = pytest.importorskip("meddiff.data.degrade")
    x0 = torch.from_numpy(_smooth(32)).float()[None, None]
    for mode in ("bicubic", "bilinear"):
        sr = degrade.SuperResolution(4.0, mode)
        lr = sr.downsample(x0)
        ours = interpolate_baseline(lr, (32, 32), mode)
        torch.testing.assert_close(ours, sr.upsample(lr, (32, 32)))
        # on the real measurement too, bicubic beats nearest
        near = interpolate_baseline(lr, (32, 32), "nearest")
        assert psnr(ours, x0, 2.0)[0] > psnr(near, x0, 2.0)[0]
