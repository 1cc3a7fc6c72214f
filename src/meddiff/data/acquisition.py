"""How scanners make a low-resolution image: acquisition degradations for super-resolution.

Each function takes a real (or complex) image tensor whose last axes are spatial, in physical
intensity units (a magnitude image, background 0; the training pipeline maps [-1, 1] to
u = (x + 1) / 2 first), and returns the image a scanner would deliver.

Pixel-grid convention (all functions, and the one `meddiff sample` writes into DICOM/NIfTI):
the delivered image of M pixels along an axis of N high-resolution pixels, ratio r = N / M,
has its pixel m centred on high-resolution coordinate

    c_m = r m + (r - 1) / 2                                     (cell-centred; HR pixel j at j)

i.e. each low-resolution pixel covers r high-resolution pixels and sits at their centre. This is
torch's ``align_corners=False`` (the bicubic/area kernels and the interpolation back to the full
grid use it) and it is what `meddiff.io.dicom_write` assumes when it moves the first pixel
centre by (new - old spacing) / 2. A bare DFT truncation instead samples at c_m = r m (its pixel 0
is HR pixel 0): 1.5 HR pixels off at x4, worth about 3 dB. The k-space functions below therefore
apply the shift theorem, a phase ramp exp(+2 pi i k s / N) with s = (r - 1) / 2, so their output
follows the same convention. (On a real scanner the delivered series carries its own positions;
`meddiff sample` writes the output geometry from them, so inference needs no such shift.)

Definitions (k: integer DFT frequency, centred, k in [-n//2, n - n//2) for n kept samples;
kappa = k / (n / 2) in [-1, 1)):

- **k-space truncation** (a low-matrix acquisition, Haacke et al., "Magnetic Resonance Imaging:
  Physical Principles and Sequence Design", 1999, ch. 12): keep the central n of the N DFT
  samples along each acquired axis, inverse DFT on n points, scaled by n / N per axis so the mean
  intensity is kept; magnitude. Along the slice axis of a volume: a 3D acquisition with fewer
  partitions (the same operator on that axis).
- **apodisation** (Harris, Proc. IEEE 66:51, 1978): the kept samples multiplied by a window
  w(kappa), separably per axis: Hamming 0.54 + 0.46 cos(pi kappa); Tukey (alpha) 1 for |kappa|
  <= 1 - alpha, else 0.5 (1 + cos(pi (|kappa| - 1 + alpha) / alpha)); Fermi
  1 / (1 + exp((|kappa| - kappa_c) / width)) (Bernstein, King & Zhou, "Handbook of MRI Pulse
  Sequences", 2004, ch. 13; kappa_c = 0.9, width = 0.05 by default).
- **zero-filled interpolation** (ZIP, Bernstein et al. 2001, MRM 46:955 "Effect of windowing and
  zero-filled reconstruction of MRI data on spatial resolution and acquisition strategy"): the n
  acquired samples zero-padded to M = z n before the inverse DFT (consoles deliver z = 2):
  band-limited (sinc) interpolation of the acquisition.
- **partial Fourier** (Noll, Nishimura & Macovski, IEEE TMI 10:154, 1991): along the phase-encode
  axis only the lines k < k_hi are acquired, a fraction f of the n lines (f = 5/8: k_hi = n/8).
  Zero-filled: |IDFT(mask K)|. Homodyne: H(k) = 2 for k <= -k_hi, 1 for |k| < k_hi, 0 otherwise
  (so H(k) + H(-k) = 2), phase phi of the image of the symmetric centre |k| < k_hi, result
  Re(IDFT(H K) exp(-i phi)) (exact for an image whose phase is that of its low-pass).
- **noise** (Gudbjartsson & Patz, MRM 34:910, 1995): complex white Gaussian noise added to the
  acquired k-space samples, scaled so each of the real and imaginary image channels has std
  sigma (for the fully sampled acquisition): the magnitude background is Rayleigh(sigma), mean
  sigma sqrt(pi / 2), second moment 2 sigma^2; bright tissue is nearly Gaussian(sigma).
- **image kernels and slice profiles**: low-resolution pixel m is the profile-weighted mean of the
  high-resolution pixels around c_m, p((j - c_m) / r) with p a box (area / contiguous thick
  slices: the exact overlap of HR pixel j with [c_m - r/2, c_m + r/2]), a Gaussian or a triangle of
  FWHM `fwhm` low-resolution pixels (a Gaussian PSF; a slice profile thicker or thinner than the
  spacing), rows renormalised at the borders. Bicubic: `SuperResolution.downsample` (Med-cDiff).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from ..errors import InputError

Tensor = torch.Tensor

WINDOWS = ("none", "hamming", "tukey", "fermi")
PROFILES = ("box", "gaussian", "triangle")


def grid_offset(n_hr: int, n_out: int) -> float:
    """HR coordinate of the centre of delivered pixel 0: (r - 1) / 2, r = n_hr / n_out."""
    return (n_hr / n_out - 1.0) / 2.0


def pixel_centres(n_hr: int, n_out: int) -> Tensor:
    """[n_out] HR coordinates c_m = r m + (r - 1) / 2 of the delivered pixel centres (float64)."""
    r = n_hr / n_out
    return torch.arange(n_out, dtype=torch.float64) * r + (r - 1.0) / 2.0


def centred_freqs(n: int) -> Tensor:
    """[n] integer frequencies k of an fftshift-ed spectrum of n samples: -n//2 ... n - n//2 - 1."""
    return torch.arange(n, dtype=torch.float64) - n // 2


def window(name: str, n: int, *, alpha: float = 0.5, kappa_c: float = 0.9, width: float = 0.05) -> Tensor:
    """[n] apodisation weights over centred_freqs(n), as defined in the module docstring (float64)."""
    kappa = (centred_freqs(n) / (n / 2.0)).abs()
    if name == "none":
        return torch.ones(n, dtype=torch.float64)
    if name == "hamming":
        return 0.54 + 0.46 * torch.cos(math.pi * kappa)
    if name == "tukey":
        if not 0 < alpha <= 1:
            raise InputError(f"Tukey window: expected 0 < alpha <= 1, got {alpha}")
        taper = 0.5 * (1 + torch.cos(math.pi * (kappa - 1 + alpha) / alpha))
        return torch.where(kappa <= 1 - alpha, torch.ones_like(kappa), taper)
    if name == "fermi":
        return 1.0 / (1.0 + torch.exp((kappa - kappa_c) / width))
    raise InputError(f"apodisation window {name!r}: expected one of {WINDOWS}")


def _bcast(v: Tensor, ndim: int, axis: int) -> Tensor:
    shape = [1] * ndim
    shape[axis] = v.numel()
    return v.view(shape)


def _axes(x: Tensor, axes: Sequence[int]) -> list[int]:
    out = [a % x.ndim for a in axes]
    if len(set(out)) != len(out):
        raise InputError(f"k-space axes {list(axes)} repeat an axis of a {x.ndim}-d image")
    return out


def to_kspace(u: Tensor, axes: Sequence[int]) -> Tensor:
    """Centred (fftshift-ed) unnormalised DFT of u along `axes` (complex128)."""
    axes = _axes(u, axes)
    return torch.fft.fftshift(torch.fft.fftn(u.to(torch.complex128), dim=axes), dim=axes)


def crop_kspace(K: Tensor, axes: Sequence[int], keep: Sequence[int]) -> Tensor:
    """The central keep[i] samples along each axis of a centred spectrum (k = 0 stays at keep // 2)."""
    for a, n in zip(_axes(K, axes), keep):
        N = K.shape[a]
        if not 1 <= n <= N:
            raise InputError(f"k-space truncation: cannot keep {n} of {N} samples along axis {a}")
        K = K.narrow(a, N // 2 - n // 2, n)
    return K


def from_kspace(K: Tensor, axes: Sequence[int], out: Sequence[int], n_hr: Sequence[int]) -> Tensor:
    """Zero-pad the centred spectrum K to out[i] samples per axis, shift to the cell-centred grid of
    out[i] pixels over n_hr[i] HR pixels (phase ramp, module docstring), inverse DFT, scale by
    out / n_hr per axis (mean kept). Returns the complex image."""
    axes = _axes(K, axes)
    for a, M, N in zip(axes, out, n_hr):
        n = K.shape[a]
        if M < n:
            raise InputError(f"zero-filling: {M} output samples along axis {a} is fewer than the {n} acquired")
        K = _shift_and_pad(K, a, grid_offset(N, M) / N, M)
    return _inverse(K, axes) * math.prod(M / N for M, N in zip(out, n_hr))


def _shift_and_pad(K: Tensor, a: int, shift: float, M: int) -> Tensor:
    """Shift the image of the centred spectrum K along axis a by `shift` of its field of view (a phase
    ramp e^{2 pi i k shift}), then zero-pad the spectrum symmetrically to M samples."""
    n = K.shape[a]
    k = centred_freqs(n).to(K.device)
    K = K * _bcast(torch.exp(2j * math.pi * k * shift), K.ndim, a)
    pad = [0, 0] * K.ndim
    lo = M // 2 - n // 2
    pad[2 * (K.ndim - 1 - a)] = lo
    pad[2 * (K.ndim - 1 - a) + 1] = M - n - lo
    return F.pad(K, pad)


def _inverse(K: Tensor, axes: list[int]) -> Tensor:
    """The complex image of the centred spectrum K over `axes` (unscaled inverse DFT)."""
    return torch.fft.ifftn(torch.fft.ifftshift(K, dim=axes), dim=axes)


def _noise(K: Tensor, axes: list[int], sigma: float, n_hr: Sequence[int], generator: torch.Generator | None) -> Tensor:
    if sigma <= 0:
        return K
    n = math.prod(K.shape[a] for a in axes)
    std = sigma * math.prod(n_hr) / math.sqrt(n)
    dev = generator.device if generator is not None else K.device
    re = torch.randn(tuple(K.shape), generator=generator, device=dev, dtype=torch.float64)
    im = torch.randn(tuple(K.shape), generator=generator, device=dev, dtype=torch.float64)
    return K + std * torch.complex(re, im).to(K.device)


def acquire(u: Tensor, axes: Sequence[int], keep: Sequence[int], out: Sequence[int] | None = None, *,
            window_name: str = "none", partial: float | None = None, homodyne: bool = False,
            sigma: float = 0.0, generator: torch.Generator | None = None, magnitude: bool = True,
            **window_kw: float) -> Tensor:
    """A low-resolution MR acquisition of u along `axes` (module docstring): keep[i] central k-space
    samples per axis, apodised by `window_name`, with partial Fourier (fraction `partial` of the lines
    along axes[0], zero-filled or `homodyne`) and k-space noise of image std `sigma`, delivered on
    out[i] pixels (default keep: no zero-filling). Magnitude (real part for homodyne) unless
    magnitude=False (the complex image; homodyne always returns its real part)."""
    axes = _axes(u, axes)
    keep = list(keep)
    out = list(out) if out is not None else keep
    n_hr = [u.shape[a] for a in axes]
    if not len(axes) == len(keep) == len(out):
        raise InputError(f"k-space acquisition: {len(axes)} axes but {len(keep)} kept sizes and {len(out)} output sizes")
    K = crop_kspace(to_kspace(u, axes), axes, keep)
    for a, n in zip(axes, keep):
        K = K * _bcast(window(window_name, n, **window_kw).to(K.device), K.ndim, a)
    mask = None
    if partial is not None:
        if not 0.5 < partial <= 1.0:
            raise InputError(f"partial Fourier: expected a fraction in (0.5, 1], got {partial}")
        a, n = axes[0], keep[0]
        k = centred_freqs(n).to(K.device)
        k_hi = -(n // 2) + round(partial * n)  # lines k < k_hi acquired
        mask = _bcast((k < k_hi).to(torch.float64), K.ndim, a)
        K = K * mask
    K = _noise(K, axes, sigma, n_hr, generator)
    if mask is not None:
        K = K * mask  # noise only where lines were acquired
    if partial is not None and homodyne:
        a, n = axes[0], keep[0]
        k = centred_freqs(n).to(K.device)
        k_hi = -(n // 2) + round(partial * n)
        H = torch.where(k <= -k_hi, 2.0, torch.where(k.abs() < k_hi, 1.0, 0.0)).to(torch.float64)
        low = _bcast((k.abs() < k_hi).to(torch.float64), K.ndim, a)
        phase = torch.angle(from_kspace(K * low, axes, out, n_hr))
        img = from_kspace(K * _bcast(H, K.ndim, a), axes, out, n_hr)
        return (img * torch.exp(-1j * phase)).real.to(u.real.dtype)
    img = from_kspace(K, axes, out, n_hr)
    if not magnitude:
        return img
    return img.abs().to(u.real.dtype)


def sinc_upsample(lr: Tensor, axes: Sequence[int], size: Sequence[int]) -> Tensor:
    """Zero-filled (sinc) interpolation of a delivered image to `size` along `axes`, on the
    cell-centred grid (delivered pixel m lands on output coordinate r m + (r - 1) / 2): the classical
    band-limited baseline beside bicubic. Real input -> real output (the real part)."""
    axes = _axes(lr, axes)
    n = [lr.shape[a] for a in axes]
    K = to_kspace(lr, axes)
    # The input is on its own grid (offset 0 in its units); place it on the finer grid: output pixel j
    # at input coordinate (j - (r - 1) / 2) / r, i.e. shift the input by -(r - 1) / (2 r) of its pixels.
    for a, m, M in zip(axes, n, size):
        if M < m:
            raise InputError(f"sinc interpolation: target {M} is smaller than the input {m} along axis {a}")
        # Nyquist of an even input: split between -m/2 and +m/2 so a real input stays real
        if m % 2 == 0 and M > m:
            ny = K.narrow(a, 0, 1) / 2
            K = torch.cat([ny, K.narrow(a, 1, m - 1), ny], dim=a)
        s = -grid_offset(M, m) / (M / m)  # in input pixels: -(r - 1) / (2 r) with r = M / m
        K = _shift_and_pad(K, a, s / m, M)
    img = _inverse(K, axes) * math.prod(M / m for M, m in zip(size, n))
    return img.real.to(lr.real.dtype) if not lr.is_complex() else img


def profile_matrix(n_hr: int, n_out: int, profile: str = "box", fwhm: float = 1.0) -> Tensor:
    """[n_out, n_hr] weights: row m is the profile p((j - c_m) / r) over HR pixels j, normalised to
    sum 1 (box: exact overlap of pixel j with [c_m - r fwhm / 2, c_m + r fwhm / 2]; gaussian /
    triangle of FWHM `fwhm` delivered pixels). float64."""
    if not 1 <= n_out <= n_hr:
        raise InputError(f"profile kernel: cannot make {n_out} pixels from {n_hr}")
    if fwhm <= 0:
        raise InputError(f"profile kernel: expected a FWHM > 0, got {fwhm}")
    r = n_hr / n_out
    c = pixel_centres(n_hr, n_out)[:, None]
    j = torch.arange(n_hr, dtype=torch.float64)[None, :]
    if profile == "box":
        half = r * fwhm / 2
        w = (torch.minimum(j + 0.5, c + half) - torch.maximum(j - 0.5, c - half)).clamp_min(0)
    elif profile == "gaussian":
        s = r * fwhm / (2 * math.sqrt(2 * math.log(2)))
        w = torch.exp(-((j - c) ** 2) / (2 * s * s))
    elif profile == "triangle":
        w = (1 - (j - c).abs() / (r * fwhm)).clamp_min(0)
    else:
        raise InputError(f"slice/PSF profile {profile!r}: expected one of {PROFILES}")
    sums = w.sum(1, keepdim=True)
    if bool((sums <= 0).any()):
        raise InputError(f"profile kernel {profile!r} with FWHM {fwhm}: some pixel sees no HR pixel")
    return w / sums


def profile_downsample(x: Tensor, axis: int, n_out: int, profile: str = "box", fwhm: float = 1.0) -> Tensor:
    """x with `axis` reduced to n_out pixels by profile_matrix (thick slices, area, Gaussian PSF)."""
    a = axis % x.ndim
    Wm = profile_matrix(x.shape[a], n_out, profile, fwhm).to(x.device, torch.float64)
    moved = x.movedim(a, -1).to(torch.float64)
    return (moved @ Wm.T).movedim(-1, a).to(x.dtype)


def image_kernel(x: Tensor, size: Sequence[int], profile: str = "box", fwhm: float = 1.0) -> Tensor:
    """In-plane (last two axes) profile downsampling to `size` (area: box, fwhm 1; Gaussian PSF)."""
    out = profile_downsample(x, -2, size[0], profile, fwhm)
    return profile_downsample(out, -1, size[1], profile, fwhm)


# --------------------------------------------------------------------------- training mixture

#: The acquisition kernels of a training mixture (`augment.sr_kernels`, beside `bicubic`): each makes
#: the delivered image of an acquisition of size `size` from an HR image (module docstring).
KSPACE_KERNELS = ("kspace_none", "kspace_hamming", "kspace_tukey", "kspace_fermi", "pf58_zerofill",
                  "pf58_homodyne", "zip2")
IMAGE_KERNELS = ("area", "gauss_psf")
ACQ_KERNELS = KSPACE_KERNELS + IMAGE_KERNELS


def low_res(u: Tensor, kernel: str, size: Sequence[int], sigma: float = 0.0,
            generator: torch.Generator | None = None) -> Tensor:
    """The delivered in-plane image (last two axes) of `kernel` (ACQ_KERNELS) for acquisition matrix
    `size`, noise std `sigma` (k-space noise for the k-space kernels, Rician in the image for the
    image kernels). zip2 delivers 2 * size (at most the HR size); the others `size`."""
    H, W = u.shape[-2:]
    size = [int(s) for s in size]
    if kernel in IMAGE_KERNELS:
        lr = image_kernel(u, size, "box" if kernel == "area" else "gaussian", 1.0)
        if sigma > 0:
            dev = generator.device if generator is not None else u.device
            n1 = torch.randn(tuple(lr.shape), generator=generator, device=dev, dtype=torch.float64).to(lr.device)
            n2 = torch.randn(tuple(lr.shape), generator=generator, device=dev, dtype=torch.float64).to(lr.device)
            lr = torch.sqrt((lr + sigma * n1) ** 2 + (sigma * n2) ** 2).to(u.dtype)
        return lr
    if kernel not in KSPACE_KERNELS:
        raise InputError(f"acquisition kernel {kernel!r}: expected one of {ACQ_KERNELS}")
    kw: dict = {"sigma": sigma, "generator": generator}
    out = size
    if kernel.startswith("kspace_"):
        kw["window_name"] = kernel[len("kspace_"):]
    elif kernel.startswith("pf58_"):
        kw.update(partial=5 / 8, homodyne=kernel.endswith("homodyne"))
    elif kernel == "zip2":
        out = [min(2 * s, n) for s, n in zip(size, (H, W))]
    img = acquire(u, (-2, -1), size, out, **kw)
    return img.to(u.dtype)
