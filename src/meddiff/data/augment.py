"""Training augmentations that cover real acquisitions (the `augment` section of the config).

Two kinds, kept apart because they act on different images:

- **Appearance** changes the *image itself* (target and condition alike): intensity gamma, a
  smooth multiplicative bias field. A model trained on these sees many contrasts and
  inhomogeneities instead of one template's.
- **Acquisition** changes only *how the image was measured* (the condition): which
  super-resolution kernel made the low-resolution image (anti-aliased bicubic, or k-space
  truncation as an MRI scanner does), an extra Gaussian point-spread / slice-profile blur, and
  acquisition noise (Gaussian or Rician) before and after downsampling.

Every function takes images [B, 1, H, W] in [-1, 1] and draws all randomness from the given
torch.Generator (per image), so a seeded run is reproducible and CPU/CUDA agree. Intensities
are mapped to u = (x + 1) / 2 in [0, 1] (0 = background, the magnitude-image convention)
where the physics needs it (Rician noise, bias, gamma), then back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from ..config import AugmentConfig
from ..errors import ConfigError, InputError
from .degrade import SuperResolution, _check_x0, _rand, _randn

Tensor = torch.Tensor

from .acquisition import ACQ_KERNELS, KSPACE_KERNELS, low_res

SR_KERNELS = ("bicubic", "kspace") + ACQ_KERNELS  # kspace: the legacy uncentred truncation (v1)


def _uniform(lo_hi: tuple[float, float], batch: int, generator: torch.Generator | None, like: Tensor) -> Tensor:
    """[B, 1, 1, 1] values ~ U(lo, hi)."""
    lo, hi = lo_hi
    return lo + (hi - lo) * _rand((batch, 1, 1, 1), generator, like)


# --------------------------------------------------------------------------- appearance


def gamma_contrast(x: Tensor, gamma: Tensor) -> Tensor:
    """u -> u ** gamma on u = (x + 1) / 2 (gamma [B, 1, 1, 1] > 0): gamma < 1 brightens, > 1 darkens."""
    u = ((x + 1) / 2).clamp(0, 1)
    return u.pow(gamma) * 2 - 1


def bias_field(shape: tuple[int, ...], strength: Tensor, generator: torch.Generator | None, like: Tensor,
               grid: int = 4) -> Tensor:
    """A smooth multiplicative field exp(strength * b), b a bicubic upsampling of a grid x grid
    standard-normal field (the usual MRI bias model: slowly varying, log-normal): [B, 1, H, W]."""
    b = _randn((shape[0], 1, grid, grid), generator, like)
    b = F.interpolate(b, size=tuple(shape[-2:]), mode="bicubic", align_corners=True)
    return torch.exp(strength * b)


def apply_bias(x: Tensor, field: Tensor) -> Tensor:
    """u * field on u = (x + 1) / 2, re-normalised to [0, 1] by the image's own maximum (as
    per-image min/max normalisation would; over all planes of a [B, 2K+1, H, W] stack), back to [-1, 1]."""
    u = ((x + 1) / 2).clamp(0, 1) * field
    u = u / u.amax(dim=tuple(range(1, u.ndim)), keepdim=True).clamp_min(1e-6)  # per image (a 2.5D stack: one scale)
    return u * 2 - 1


@dataclass(frozen=True)
class Appearance:
    """Random gamma in `gamma` and a bias field of log-amplitude up to `bias`, per image."""

    gamma: tuple[float, float] = (1.0, 1.0)
    bias: float = 0.0

    def __call__(self, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """x0 [B, C, H, W]: C = 1, or the 2K+1 planes of a 2.5D stack (one gamma and field per stack)."""
        if x0.ndim != 4:
            raise InputError(f"appearance augmentation expects x0 of shape [B, C, H, W], got {tuple(x0.shape)}")
        out = x0
        if self.gamma != (1.0, 1.0):
            out = gamma_contrast(out, torch.exp(_uniform(tuple(math.log(g) for g in self.gamma), x0.shape[0], generator, x0)))
        if self.bias > 0:
            strength = _uniform((0.0, self.bias), x0.shape[0], generator, x0)
            out = apply_bias(out, bias_field(tuple(x0.shape), strength, generator, x0))
        return out


# --------------------------------------------------------------------------- acquisition


def kspace_truncate(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Low-resolution image of size (h, w) made as an MRI scanner does: keep the central h x w
    of the 2D Fourier transform (the k-space the scan acquired) and transform back, magnitude.

    With the orthonormal FFT the mean intensity is kept by scaling with sqrt(h w / (H W)).
    On u = (x + 1) / 2 (magnitude images: background 0), back to [-1, 1]. [B, C, H, W] -> [B, C, h, w].
    """
    H, W = x.shape[-2:]
    h, w = size
    u = (x.double() + 1) / 2
    k = torch.fft.fftshift(torch.fft.fft2(u, norm="ortho"), dim=(-2, -1))
    top, left = H // 2 - h // 2, W // 2 - w // 2  # fftshift puts k = 0 at index H // 2; keep it at h // 2
    k = k[..., top : top + h, left : left + w]
    lr = torch.fft.ifft2(torch.fft.ifftshift(k, dim=(-2, -1)), norm="ortho").abs() * math.sqrt(h * w / (H * W))
    return (lr * 2 - 1).to(x.dtype)


def gaussian_blur(x: Tensor, sigma: Tensor) -> Tensor:
    """Per-image isotropic Gaussian blur of std `sigma` [B] pixels (0 = none), reflect padding."""
    out = x.clone()
    for i, s in enumerate(sigma.tolist()):
        if s <= 1e-3:
            continue
        r = max(1, int(math.ceil(3 * s)))
        t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
        k = torch.exp(-(t**2) / (2 * s * s))
        k = k / k.sum()
        xi = F.pad(x[i : i + 1], (r, r, r, r), mode="reflect") if min(x.shape[-2:]) > r else F.pad(x[i : i + 1], (r, r, r, r), mode="replicate")
        xi = F.conv2d(xi, k.view(1, 1, 1, -1).expand(x.shape[1], 1, 1, -1), groups=x.shape[1])
        out[i : i + 1] = F.conv2d(xi, k.view(1, 1, -1, 1).expand(x.shape[1], 1, -1, 1), groups=x.shape[1])
    return out


def add_noise(x: Tensor, sigma: Tensor, kind: str, generator: torch.Generator | None) -> Tensor:
    """Acquisition noise of std `sigma` [B, 1, 1, 1] (in u = (x + 1) / 2 units, i.e. a fraction of
    the intensity range): "gaussian" u + n, or "rician" |u + n1 + i n2| (magnitude MR images:
    the background becomes Rayleigh-distributed, bright tissue stays nearly Gaussian)."""
    u = (x + 1) / 2
    n1 = _randn(tuple(x.shape), generator, x) * sigma
    if kind == "gaussian":
        u = u + n1
    elif kind == "rician":
        n2 = _randn(tuple(x.shape), generator, x) * sigma
        u = torch.sqrt((u + n1) ** 2 + n2**2)
    else:
        raise ConfigError(f"augment.noise_kind: expected 'gaussian' or 'rician', got {kind!r}")
    return (u * 2 - 1).clamp(-1, 1)


@dataclass(frozen=True)
class Acquisition:
    """Super-resolution training degradation over varied acquisitions (a Degradation: see degrade.py).

    Per image: the kernel (``kernels``: bicubic = Med-cDiff's anti-aliased downsampling, kspace =
    central k-space truncation), an extra Gaussian blur of std ~ U(blur) low-resolution pixels
    (slice profile / point-spread variation) applied before downsampling, noise ~ U(hr_noise)
    added before downsampling (it passes through the kernel) and ~ U(lr_noise) after it; then the
    model's interpolation back to the full size, as `meddiff sample` does with a real input.
    The sampling-time condition (SuperResolution.upsample of the measured image) is unchanged.
    """

    factor: float = 4.0
    upsample_mode: str = "bicubic"
    kernels: tuple[str, ...] = ("bicubic",)
    blur: tuple[float, float] = (0.0, 0.0)
    hr_noise: tuple[float, float] = (0.0, 0.0)
    lr_noise: tuple[float, float] = (0.0, 0.0)
    noise_kind: str = "rician"
    factors: tuple[float, ...] = ()  # if set: each image's factor drawn from these
    kspace_noise: tuple[float, float] = (0.0, 0.0)  # acquisition-kernel noise std (meddiff.data.acquisition)
    cond_channels: ClassVar[int] = 1

    def __post_init__(self) -> None:
        bad = [k for k in self.kernels if k not in SR_KERNELS]
        if not self.kernels or bad:
            raise ConfigError(f"augment.sr_kernels: expected a non-empty list of {SR_KERNELS}, got {list(self.kernels)}")
        if self.noise_kind not in ("gaussian", "rician"):
            raise ConfigError(f"augment.noise_kind: expected 'gaussian' or 'rician', got {self.noise_kind!r}")
        for f in self.factors or (self.factor,):
            SuperResolution(f, self.upsample_mode)  # validates

    def _one(self, x0: Tensor, factor: float, kernel: str, generator: torch.Generator | None) -> Tensor:
        sr = SuperResolution(factor, self.upsample_mode)
        x = x0
        if self.blur[1] > 0:
            x = gaussian_blur(x, _uniform(self.blur, x.shape[0], generator, x).flatten() * factor)
        if self.hr_noise[1] > 0:
            x = add_noise(x, _uniform(self.hr_noise, x.shape[0], generator, x), self.noise_kind, generator)
        size = sr.low_res_size(tuple(x.shape[-2:]))
        if kernel == "kspace":
            lr = kspace_truncate(x, size)
        elif kernel in ACQ_KERNELS:  # meddiff.data.acquisition, on u = (x + 1) / 2, cell-centred grid
            sigma = float(_uniform(self.kspace_noise, 1, generator, x)) if self.kspace_noise[1] > 0 else 0.0
            lr = low_res((x.double() + 1) / 2, kernel, size, sigma, generator).to(x.dtype) * 2 - 1
        else:
            lr = sr.downsample(x)
        if self.lr_noise[1] > 0:
            lr = add_noise(lr, _uniform(self.lr_noise, x.shape[0], generator, x), self.noise_kind, generator)
        return sr.upsample(lr.clamp(-1, 1), tuple(x0.shape[-2:]))

    def __call__(self, x0: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        _check_x0(x0)
        factors = self.factors or (self.factor,)
        cond = torch.empty_like(x0)
        for i in range(x0.shape[0]):  # per image: its own kernel and factor
            f = factors[min(int(_rand((1,), generator, x0).item() * len(factors)), len(factors) - 1)]
            k = self.kernels[min(int(_rand((1,), generator, x0).item() * len(self.kernels)), len(self.kernels) - 1)]
            cond[i : i + 1] = self._one(x0[i : i + 1], f, k, generator)
        return cond, torch.ones_like(x0)

    def model_condition(self, cond: Tensor, mask: Tensor) -> Tensor:
        return cond


def acquisition_changed(aug: AugmentConfig) -> bool:
    """True if the augment section asks for any acquisition variety (kernels, blur, noise)."""
    d = AugmentConfig()
    return (tuple(aug.sr_kernels), tuple(aug.blur), tuple(aug.hr_noise), tuple(aug.lr_noise), tuple(aug.kspace_noise)) != (
        tuple(d.sr_kernels), tuple(d.blur), tuple(d.hr_noise), tuple(d.lr_noise), tuple(d.kspace_noise))


def build_acquisition(task, aug: AugmentConfig) -> Acquisition:
    """The training degradation of an SR task with the augment section's acquisition settings."""
    if task.kind != "sr":
        raise ConfigError(f"augment.sr_kernels / blur / noise apply to task.kind sr, not {task.kind!r}")
    return Acquisition(factor=task.sr_factor, upsample_mode=task.sr_upsample, kernels=tuple(aug.sr_kernels),
                       blur=tuple(aug.blur), hr_noise=tuple(aug.hr_noise), lr_noise=tuple(aug.lr_noise),
                       noise_kind=aug.noise_kind, factors=tuple(task.sr_factors), kspace_noise=tuple(aug.kspace_noise))


def build_appearance(aug: AugmentConfig) -> Appearance | None:
    """The appearance augmentation of the config (None when it changes nothing)."""
    if tuple(aug.gamma) == (1.0, 1.0) and aug.bias_field == 0:
        return None
    if not 0 < aug.gamma[0] <= aug.gamma[1]:
        raise ConfigError(f"augment.gamma: expected 0 < low <= high, got {list(aug.gamma)}")
    if aug.bias_field < 0:
        raise ConfigError(f"augment.bias_field: expected >= 0, got {aug.bias_field}")
    return Appearance(gamma=tuple(aug.gamma), bias=aug.bias_field)
