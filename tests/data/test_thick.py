"""Thick-slice degradation (meddiff.data.thick) and the volume metrics (meddiff.metrics.volume)."""

import numpy as np
import pytest
import torch

from meddiff.data.thick import thick_slice_condition, thick_slices, upsample_axis
from meddiff.errors import InputError
from meddiff.metrics.volume import plane_metrics, planes, through_plane_error


def test_thick_slices_average_groups_along_the_axis_only():
    x = torch.arange(2 * 8 * 3, dtype=torch.float64).reshape(2, 8, 3)
    t = thick_slices(x, 4, axis=1)
    assert t.shape == (2, 2, 3)
    torch.testing.assert_close(t[:, 0], x[:, 0:4].mean(1))
    torch.testing.assert_close(t[:, 1], x[:, 4:8].mean(1))
    with pytest.raises(InputError, match="not a multiple of the factor 4"):
        thick_slices(x, 4, axis=2)


def test_a_linear_ramp_along_z_comes_back_exactly_in_the_interior():
    z = torch.arange(16, dtype=torch.float64)
    vol = z[:, None, None].expand(16, 5, 6).clone() * 0.1 - 0.7
    back = thick_slice_condition(vol, 4, 0, "linear")
    assert back.shape == vol.shape
    torch.testing.assert_close(back[2:-2], vol[2:-2], rtol=0, atol=1e-9)  # box mean of a ramp = its centre value
    assert torch.equal(back[:, 1:], back[:, :1].expand_as(back[:, 1:]))  # other axes untouched
    cubic = thick_slice_condition(vol, 4, 0, "cubic")  # torch's cubic (a = -0.75) only nearly keeps a ramp
    assert (cubic[2:-2] - vol[2:-2]).abs().max() < 0.05 and not torch.equal(cubic, back)


def test_upsample_axis_keeps_other_axes_and_refuses_unknown_modes():
    x = torch.rand(3, 4, 5, dtype=torch.float64)
    y = upsample_axis(x, 8, axis=1)
    assert y.shape == (3, 8, 5)
    with pytest.raises(InputError, match="nearest"):
        upsample_axis(x, 8, 1, "nearest")


def test_through_plane_error_ignores_offsets_and_sees_slice_flicker():
    rng = np.random.default_rng(0)
    truth = rng.uniform(-1, 1, (6, 12, 12))
    assert through_plane_error(truth + 0.3, truth, 0) == pytest.approx(0.0, abs=1e-12)
    flicker = truth + 0.1 * (-1.0) ** np.arange(6)[:, None, None]  # alternating +-0.1 per slice
    assert through_plane_error(flicker, truth, 0) == pytest.approx(0.2)
    assert through_plane_error(flicker, truth, 1) == pytest.approx(0.0, abs=1e-12)


def test_plane_metrics_skip_empty_planes_and_match_per_plane_means():
    rng = np.random.default_rng(1)
    truth = np.full((12, 14, 13), -1.0)
    truth[1:-1] = rng.uniform(-1, 1, (10, 14, 13))
    pred = truth + rng.normal(0, 0.05, truth.shape)
    pred[0], pred[-1] = -1.0, -1.0  # empty planes, identical: PSNR would be inf
    p, s = plane_metrics(pred, truth, 0, 2.0)
    assert np.isfinite(p) and 25 < p < 40 and 0 < s < 1
    assert planes(truth, 2).shape == (13, 1, 12, 14)
