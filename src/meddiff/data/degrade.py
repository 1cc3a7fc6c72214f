"""Degradations that turn a clean image x0 into the condition y of a restoration task.

Tasks are data, not code: super-resolution, denoising and inpainting differ only in the
degradation below and in how many condition channels the model sees.

Contract (every degradation):

    cond, mask = deg(x0, generator=None)
        x0:   [B, 1, H, W] float in [-1, 1], any device
        cond: [B, 1, H, W] in [-1, 1], the measured/degraded image
        mask: [B, 1, H, W] in {0, 1}: 1 where the model must generate pixels, 0 where the
              condition is exactly known (all ones for SR and denoising; the holes for inpainting)
    deg.cond_channels              channels of deg.model_condition(cond, mask) (1, or 2 for inpainting)
    deg.model_condition(cond, mask) -> the tensor concatenated to x_t as model input

All randomness is drawn from `generator` (a torch.Generator; None = torch's global RNG) on
the generator's device and then moved to x0's device, so a CPU generator with a fixed seed
gives identical outputs on CPU and CUDA.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Protocol, Union

import torch
import torch.nn.functional as F

from ..config import TaskConfig
from ..errors import ConfigError, InputError
from .low_dose import LowDose, low_dose
from .masks import SHAPES, random_mask

Tensor = torch.Tensor

# The factors of Med-cDiff (2*sqrt(2), 4, 4*sqrt(2); 8, 8*sqrt(2), 16 for the downstream study).
PAPER_SR_FACTORS = (2 * math.sqrt(2), 4.0, 4 * math.sqrt(2), 8.0, 8 * math.sqrt(2), 16.0)


class Degradation(Protocol):
    cond_channels: int

    def __call__(self, x0: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]: ...

    def model_condition(self, cond: Tensor, mask: Tensor) -> Tensor: ...


def _check_x0(x0: Tensor) -> None:
    if x0.ndim != 4 or x0.shape[1] != 1:
        raise InputError(f"degradation expects x0 of shape [B, 1, H, W], got {tuple(x0.shape)}")


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """U(0, 1) of `shape` drawn on the generator's device, returned on like's device/dtype."""
    device = generator.device if generator is not None else like.device
    return torch.rand(shape, generator=generator, device=device).to(like.device, like.dtype)


def _randn(shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """N(0, 1) of `shape` drawn on the generator's device, returned on like's device/dtype."""
    device = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=device).to(like.device, like.dtype)


def _check_range(name: str, r: tuple[float, float], lo: float, hi: float) -> None:
    if len(r) != 2 or not (lo <= r[0] <= r[1] <= hi):
        raise ConfigError(f"{name}: expected (low, high) with {lo} <= low <= high <= {hi}, got {r}")


@dataclass(frozen=True)
class SuperResolution:
    """Anti-aliased downsampling by `factor`, then interpolation back to the original size.

    The low-resolution size is round(H / factor) x round(W / factor) (at least 1); the
    downsampling filter is torch's anti-aliased bicubic (kernel widened by the factor, as PIL).
    """

    factor: float = 4.0
    upsample_mode: str = "bicubic"  # "bicubic" | "bilinear"
    cond_channels: ClassVar[int] = 1

    def __post_init__(self) -> None:
        if not self.factor > 1.0:
            raise ConfigError(f"task.sr_factor: expected a factor > 1, got {self.factor}")
        if self.upsample_mode not in ("bicubic", "bilinear"):
            raise ConfigError(f"task.sr_upsample: expected 'bicubic' or 'bilinear', got {self.upsample_mode!r}")

    def low_res_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """(h, w) of the measurement for an image of size (H, W)."""
        return tuple(max(1, round(s / self.factor)) for s in size)  # type: ignore[return-value]

    def downsample(self, x0: Tensor) -> Tensor:
        """[B, C, H, W] -> the low-resolution measurement [B, C, h, w] (anti-aliased, same range)."""
        lr = F.interpolate(x0, size=self.low_res_size(tuple(x0.shape[-2:])), mode="bicubic", antialias=True, align_corners=False)
        return lr.clamp(-1.0, 1.0)

    def upsample(self, lr: Tensor, size: tuple[int, int]) -> Tensor:
        """[B, C, h, w] -> [B, C, H, W] by `upsample_mode` interpolation, clamped to [-1, 1]."""
        return F.interpolate(lr, size=tuple(size), mode=self.upsample_mode, align_corners=False).clamp(-1.0, 1.0)

    def __call__(self, x0: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        _check_x0(x0)
        cond = self.upsample(self.downsample(x0), tuple(x0.shape[-2:]))
        return cond, torch.ones_like(x0)

    def model_condition(self, cond: Tensor, mask: Tensor) -> Tensor:
        return cond


@dataclass(frozen=True)
class MultiFactorSR:
    """Super-resolution with each image's factor drawn uniformly from `factors` (training a blind
    model for several factors; the model sees only the interpolated image, not the factor).

    Image i uses SuperResolution(factors[j_i]) with j_i ~ U{0..n-1} drawn from `generator`.
    """

    factors: tuple[float, ...]
    upsample_mode: str = "bicubic"
    cond_channels: ClassVar[int] = 1

    def __post_init__(self) -> None:
        if len(self.factors) == 0:
            raise ConfigError("task.sr_factors: expected at least one factor")
        for f in self.factors:
            SuperResolution(f, self.upsample_mode)  # validates each factor and the mode

    def draw_factors(self, batch: int, generator: torch.Generator | None, like: Tensor) -> Tensor:
        """[B] indices into `factors`."""
        n = len(self.factors)
        return (_rand((batch,), generator, like) * n).long().clamp(max=n - 1)

    def __call__(self, x0: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        _check_x0(x0)
        which = self.draw_factors(x0.shape[0], generator, x0)
        cond = torch.empty_like(x0)
        for j, f in enumerate(self.factors):
            sel = which == j
            if bool(sel.any()):
                cond[sel] = SuperResolution(f, self.upsample_mode)(x0[sel])[0]
        return cond, torch.ones_like(x0)

    def model_condition(self, cond: Tensor, mask: Tensor) -> Tensor:
        return cond


@dataclass(frozen=True)
class Denoise:
    """Gaussian noise of std sigma, then salt-and-pepper on a fraction p of the pixels, clamped.

    sigma ~ U(noise_std) and p ~ U(salt_pepper) are drawn once per sample (per image of the
    batch). Salt-and-pepper pixels are set to -1 or +1 with equal probability. Both levels
    are in [-1, 1] image units (sigma = 0.1 is 5% of the full intensity range).
    """

    noise_std: tuple[float, float] = (0.05, 0.2)
    salt_pepper: tuple[float, float] = (0.0, 0.05)
    low_dose_share: float = 0.0  # this fraction of the images gets low-dose radiograph noise instead
    low_dose_model: LowDose = LowDose()
    cond_channels: ClassVar[int] = 1

    def __post_init__(self) -> None:
        _check_range("task.noise_std", self.noise_std, 0.0, math.inf)
        _check_range("task.salt_pepper", self.salt_pepper, 0.0, 1.0)
        if not 0.0 <= self.low_dose_share <= 1.0:
            raise ConfigError(f"task.low_dose_share: expected a fraction in [0, 1], got {self.low_dose_share}")

    def draw_levels(self, batch: int, generator: torch.Generator | None, like: Tensor) -> tuple[Tensor, Tensor]:
        """Per-sample (sigma [B], p [B]) drawn uniformly in the configured ranges."""
        u = _rand((2, batch), generator, like)
        sigma = self.noise_std[0] + (self.noise_std[1] - self.noise_std[0]) * u[0]
        p = self.salt_pepper[0] + (self.salt_pepper[1] - self.salt_pepper[0]) * u[1]
        return sigma, p

    def apply(self, x0: Tensor, sigma: Tensor, p: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The noisy image for given levels sigma [B] and p [B]: clamp(S&P(x0 + sigma * eps))."""
        _check_x0(x0)
        shape = tuple(x0.shape)
        y = x0 + sigma.view(-1, 1, 1, 1) * _randn(shape, generator, x0)
        hit = _rand(shape, generator, x0) < p.view(-1, 1, 1, 1)
        salt = _rand(shape, generator, x0) < 0.5
        y = torch.where(hit, torch.where(salt, 1.0, -1.0).to(x0.dtype), y)
        return y.clamp(-1.0, 1.0)

    def __call__(self, x0: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        _check_x0(x0)
        sigma, p = self.draw_levels(x0.shape[0], generator, x0)
        y = self.apply(x0, sigma, p, generator)
        if self.low_dose_share > 0:  # drawn after the Gaussian pairs, so share 0 keeps their random stream
            u = _rand((2, x0.shape[0]), generator, x0)
            d = self.low_dose_model.draw_dose(x0.shape[0], u[1])
            chosen = (u[0] < self.low_dose_share).view(-1, 1, 1, 1)
            y = torch.where(chosen, low_dose(x0, d, self.low_dose_model, generator), y)
        return y, torch.ones_like(x0)

    def model_condition(self, cond: Tensor, mask: Tensor) -> Tensor:
        return cond


@dataclass(frozen=True)
class Inpaint:
    """Random holes (boxes, free-form strokes) covering a fraction U(coverage) of each image.

    cond = x0 with the holes set to 0; mask = 1 inside the holes. The model sees
    cat(cond, mask) (cond_channels = 2) so it can tell a hole from a mid-grey pixel.
    """

    kinds: tuple[str, ...] = ("box", "stroke")
    coverage: tuple[float, float] = (0.1, 0.4)
    cond_channels: ClassVar[int] = 2

    def __post_init__(self) -> None:
        unknown = [k for k in self.kinds if k not in SHAPES]
        if not self.kinds or unknown:
            raise ConfigError(f"task.mask_kinds: expected some of {sorted(SHAPES)}, got {list(self.kinds)}")
        _check_range("task.mask_coverage", self.coverage, 0.0, 1.0)
        if not 0.0 < self.coverage[1] < 1.0:
            raise ConfigError(f"task.mask_coverage: the upper bound must be in (0, 1), got {self.coverage}")

    def masks(self, batch: int, size: tuple[int, int], generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> Tensor:
        """[B, 1, H, W] hole masks (1 = hole), drawn in order image 0, 1, ... from `generator`."""
        h, w = size
        ms = [random_mask(h, w, self.kinds, self.coverage, generator, device) for _ in range(batch)]
        return torch.stack(ms)[:, None].to(device)

    def __call__(self, x0: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        _check_x0(x0)
        mask = self.masks(x0.shape[0], tuple(x0.shape[-2:]), generator, x0.device).to(x0.dtype)
        return x0 * (1.0 - mask), mask

    def model_condition(self, cond: Tensor, mask: Tensor) -> Tensor:
        return torch.cat([cond, mask], dim=1)


AnyDegradation = Union[SuperResolution, MultiFactorSR, Denoise, Inpaint]


def build_degradation(task: TaskConfig, *, training: bool = False) -> AnyDegradation:
    """The degradation described by the `task` section of the config.

    training=True with task.sr_factors set: MultiFactorSR over those factors (the training pairs
    of a blind multi-factor model); otherwise task.sr_factor (what sampling and evaluation use).
    """
    if task.context_slices:  # 2.5D: the same degradation of each of the 2K+1 slices (meddiff.data.volume_dataset)
        from dataclasses import replace

        from .volume_dataset import ContextCondition
        return ContextCondition(build_degradation(replace(task, context_slices=0), training=training), task.context_slices)
    if task.kind == "sr" and task.sr_axis == "through":  # thick slices along the first spatial axis
        from .volume_dataset import ThickSliceSR
        return ThickSliceSR(int(task.sr_factor))
    if task.kind == "sr" and training and task.sr_factors:
        return MultiFactorSR(factors=tuple(task.sr_factors), upsample_mode=task.sr_upsample)
    if task.kind == "sr":
        return SuperResolution(factor=task.sr_factor, upsample_mode=task.sr_upsample)
    if task.kind == "denoise":
        try:
            dose = LowDose(dose=tuple(task.dose_fraction), photons=task.photons, electronic_std=task.electronic_std)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        return Denoise(noise_std=tuple(task.noise_std), salt_pepper=tuple(task.salt_pepper),
                       low_dose_share=task.low_dose_share, low_dose_model=dose)
    if task.kind == "inpaint":
        return Inpaint(kinds=tuple(task.mask_kinds), coverage=tuple(task.mask_coverage))
    raise ConfigError(f"task.kind: expected 'sr', 'denoise' or 'inpaint', got {task.kind!r}")
