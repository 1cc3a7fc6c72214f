"""Acquisition degradations (meddiff.data.acquisition) against their definitions."""

from __future__ import annotations

import math

import pytest
import torch

from meddiff.data.acquisition import (ACQ_KERNELS, acquire, centred_freqs, crop_kspace, grid_offset, image_kernel,
                                      low_res, pixel_centres, profile_matrix, sinc_upsample, to_kspace, window)
from meddiff.data.augment import Acquisition
from meddiff.data.degrade import SuperResolution
from meddiff.data.thick import thick_slices
from meddiff.errors import InputError

N = 64


def blob(n: int = N, cy: float = 25.7, cx: float = 30.3, s: float = 6.0) -> torch.Tensor:
    """A smooth (numerically band-limited) image and its closed form."""
    y, x = torch.meshgrid(torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64), indexing="ij")
    return torch.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * s * s))[None, None]


def blob_at(cy: torch.Tensor, cx: torch.Tensor) -> torch.Tensor:
    return torch.exp(-((cx[None, :] - 30.3) ** 2 + (cy[:, None] - 25.7) ** 2) / 72.0)


def test_truncation_keeps_the_acquired_frequencies_exactly_with_the_grid_shift():
    u = torch.rand(2, 1, N, N, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    n = 16
    lr = acquire(u, (-2, -1), (n, n), magnitude=False)
    got = to_kspace(lr, (-2, -1))
    want = crop_kspace(to_kspace(u, (-2, -1)), (-2, -1), (n, n)) * (n / N) ** 2
    k = centred_freqs(n)
    ramp = torch.exp(2j * math.pi * k * grid_offset(N, n) / N)  # shift theorem, s = (r - 1) / 2
    torch.testing.assert_close(got, want * ramp[:, None] * ramp[None, :], atol=1e-10, rtol=0)


@pytest.mark.parametrize("n", [16, 21, 32])
def test_every_kernel_puts_low_resolution_pixels_at_the_cell_centres(n):
    c = pixel_centres(N, n)
    torch.testing.assert_close(c[:2], torch.tensor([(N / n - 1) / 2, N / n + (N / n - 1) / 2], dtype=torch.float64))
    exact = blob_at(c, c)
    assert (acquire(blob(), (-2, -1), (n, n))[0, 0] - exact).abs().max() < 1e-4  # band-limited: sampled exactly
    naive = blob_at(c - grid_offset(N, n), c - grid_offset(N, n))  # a bare DFT truncation's grid c_m = r m
    assert (acquire(blob(), (-2, -1), (n, n))[0, 0] - naive).abs().max() > 0.05
    ramp = torch.arange(N, dtype=torch.float64).expand(1, 1, N, N)  # HR coordinate along the columns
    inner = slice(2, n - 2)
    for lr in (image_kernel(ramp, (n, n), "box"), image_kernel(ramp, (n, n), "gaussian"),
               SuperResolution(N / n).downsample(ramp.float() / N).double() * N):
        torch.testing.assert_close(lr[0, 0, 0, inner], c[inner], atol=2e-3 * N, rtol=0)


def test_rician_floor_of_kspace_noise_has_rayleigh_moments():
    sigma = 0.05
    g = torch.Generator().manual_seed(1)
    z = acquire(torch.zeros(1, 1, 128, 128, dtype=torch.float64), (-2, -1), (64, 64), sigma=sigma, generator=g, magnitude=False)
    assert abs(float(z.real.std()) - sigma) < 0.003 and abs(float(z.imag.std()) - sigma) < 0.003
    m = z.abs()
    assert abs(float(m.mean()) - sigma * math.sqrt(math.pi / 2)) < 0.002  # Rayleigh mean
    assert abs(float((m**2).mean()) - 2 * sigma**2) < 0.0003  # Rayleigh second moment
    bright = acquire(torch.ones(1, 1, 128, 128, dtype=torch.float64), (-2, -1), (64, 64), sigma=sigma,
                     generator=torch.Generator().manual_seed(2))
    assert abs(float(bright.mean()) - 1.0) < 0.003 and abs(float(bright.std()) - sigma) < 0.003  # ~Gaussian in tissue


def test_energy_scaling_identity_and_constants():
    u = torch.rand(1, 1, N, N, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(acquire(u, (-2, -1), (N, N), magnitude=False).real, u, atol=1e-12, rtol=0)
    n = 16
    lr = acquire(u, (-2, -1), (n, n), magnitude=False)
    band = acquire(u, (-2, -1), (n, n), (N, N), magnitude=False)  # the same band on the HR grid
    # per-pixel energy kept: mean |lr|^2 = mean |band-limited u|^2 (Parseval with the n / N scaling)
    assert abs(float((lr.abs() ** 2).mean()) - float((band.abs() ** 2).mean())) < 1e-10
    for w in ("none", "hamming", "tukey"):
        torch.testing.assert_close(acquire(torch.full((1, 1, N, N), 0.3, dtype=torch.float64), (-2, -1), (n, n), window_name=w),
                                   torch.full((1, 1, n, n), 0.3, dtype=torch.float64), atol=1e-12, rtol=0)


def test_windows_match_their_definitions():
    n = 16  # kappa = k / 8, k = -8..7
    torch.testing.assert_close(window("hamming", n)[[0, 8]], torch.tensor([0.08, 1.0], dtype=torch.float64))
    tk = window("tukey", n, alpha=0.5)
    assert torch.all(tk[4:13] == 1) and abs(float(tk[0])) < 1e-12 and abs(float(tk[2]) - 0.5) < 1e-12  # kappa -0.75
    fe = window("fermi", 20, kappa_c=0.9, width=0.05)
    assert abs(float(fe[1]) - 0.5) < 1e-12  # kappa = -0.9: half height
    with pytest.raises(InputError, match="window 'kaiser'"):
        window("kaiser", n)


def test_partial_fourier_homodyne_is_exact_for_smooth_phase_zero_filling_is_not():
    u = (blob() + 0.2) * torch.exp(torch.tensor(0.7j))  # constant phase: the low-pass phase is exact
    full = acquire(u, (-2, -1), (32, 32), magnitude=False)
    hd = acquire(u, (-2, -1), (32, 32), partial=5 / 8, homodyne=True)
    torch.testing.assert_close(hd, full.abs(), atol=1e-5, rtol=0)  # up to the unpaired Nyquist line k = -16
    zf = acquire(u, (-2, -1), (32, 32), partial=5 / 8)
    assert (zf - full.abs()).abs().max() > 1e-2
    # 5/8 of the lines: k = -16 .. 3 acquired (20 of 32), so the zero-filled image keeps those exactly
    K = to_kspace(acquire(u, (-2, -1), (32, 32), partial=5 / 8, magnitude=False), (-2, -1))
    assert int((K.abs().amax(-1)[0, 0] > 1e-9).sum()) == 20 and float(K[0, 0, 20:].abs().max()) < 1e-9


def test_zero_filled_interpolation_is_sinc_interpolation_on_the_same_grid():
    u = torch.rand(1, 1, N, N, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    n = 15  # odd: no unpaired Nyquist sample
    zip2 = acquire(u, (-2, -1), (n, n), (2 * n, 2 * n), magnitude=False)
    lr = acquire(u, (-2, -1), (n, n), magnitude=False)
    torch.testing.assert_close(sinc_upsample(lr, (-2, -1), (2 * n, 2 * n)), zip2, atol=1e-10, rtol=0)
    # and sinc interpolation of a band-limited image back to its grid recovers it
    up = sinc_upsample(acquire(blob(), (-2, -1), (16, 16)), (-2, -1), (N, N))
    assert (up - blob()).abs().max() < 1e-3


def test_slice_axis_truncation_and_slice_profiles():
    v = torch.rand(16, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    flat = v[:1].expand(16, 8, 8)  # constant along the slice axis: unchanged by slice-axis truncation
    torch.testing.assert_close(acquire(flat, (0,), (4,), magnitude=False).real, flat[:4], atol=1e-12, rtol=0)
    K = to_kspace(acquire(v, (0,), (4,), magnitude=False), (0,))
    torch.testing.assert_close(K, crop_kspace(to_kspace(v, (0,)), (0,), (4,)) * (4 / 16)
                               * torch.exp(2j * math.pi * centred_freqs(4) * grid_offset(16, 4) / 16)[:, None, None],
                               atol=1e-10, rtol=0)
    box = profile_matrix(16, 4, "box")
    torch.testing.assert_close(box @ v.reshape(16, -1), thick_slices(v, 4, 0).reshape(4, -1), atol=1e-12, rtol=0)
    for prof in ("gaussian", "triangle"):
        w = profile_matrix(32, 8, prof, fwhm=1.0)
        torch.testing.assert_close(w.sum(1), torch.ones(8, dtype=torch.float64))
        centre = (w * torch.arange(32, dtype=torch.float64)).sum(1)
        torch.testing.assert_close(centre[2:6], pixel_centres(32, 8)[2:6], atol=1e-6, rtol=0)


def test_training_mixture_is_seeded_and_in_range():
    x = blob()[:, :, :, :].float().expand(3, 1, N, N) * 2 - 1
    acq = Acquisition(factor=4.0, kernels=("bicubic",) + ACQ_KERNELS, factors=(2.0, 3.0, 4.0), kspace_noise=(0.0, 0.03))
    a, _ = acq(x, torch.Generator().manual_seed(7))
    b, _ = acq(x, torch.Generator().manual_seed(7))
    assert a.shape == x.shape and torch.equal(a, b) and float(a.abs().max()) <= 1
    for k in ACQ_KERNELS:
        lr = low_res((x[:1].double() + 1) / 2, k, (16, 16))
        assert lr.shape[-2:] == ((32, 32) if k == "zip2" else (16, 16))
        assert abs(float(lr.mean()) - float((x[:1] + 1).mean() / 2)) < 0.02, k  # mean intensity kept
