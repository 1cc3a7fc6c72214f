"""Data consistency for restoration: make a sample agree with the measurement it was restored from.

Super-resolution. The measurement is y = A x0, A the anti-aliased bicubic downsampling of
data.degrade.SuperResolution (without its final clamp, so A is linear). torch's anti-aliased
interpolation is separable (a horizontal then a vertical 1D filter), so

    A x = M_H x M_W^T,   M_n = the [n_out, n_in] matrix of the 1D resampling n_in -> n_out,

and each M_n is obtained exactly by resampling the identity basis with the same F.interpolate.
The Euclidean projection onto the affine set {x : A x = y} is

    P_y(x) = x + A^+ (y - A x),   A^+ r = M_H^+ r (M_W^+)^T                        (Kronecker pseudo-inverse)

(pinv(A) = pinv(M_W kron M_H) = pinv(M_W) kron pinv(M_H)). M_n has full row rank (a smoothing
filter with stride factor > 1), so A A^+ = I and A P_y(x) = y; the correction A^+(y - A x) lies in
the row space of A, orthogonal to its null space: it is the smallest change that makes x consistent.

Thick slices (task.sr_axis through, meddiff.data.thick). The measurement is y = A x0 with A the
mean of `factor` neighbouring slices along one axis (no clamp: a mean of values in [-1, 1] stays
there). A = (1/f) S, S summing each group, so A A^T = (1/f) I and A^+ = f A^T = R, the repetition
of each thick slice f times; the projection is

    P_y(x) = x + R (y - A x),                                   A P_y(x) = A x + (y - A x) = y.

Inpainting. The known pixels (mask = 0) are measured exactly: replacement
x <- mask * x + (1 - mask) * y keeps them bit for bit. RePaint (Lugmayr et al. 2022, Algorithm 1)
instead replaces the known region of every x_{t-1} of the ancestral chain by a forward-noised copy
of the known image and can resample (jump back with q(x_t | x_{t-1})) to harmonise the two regions;
the ancestral sampler implements it (see RePaint below).

Samplers take ``consistency`` = a callable image -> image applied to each (clipped) x0 estimate in
image space, and once more to the returned sample (the last step returns the x0 estimate, so the
output is consistent; the final application removes the rounding of (x0 - y) + y in residual mode).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError

Consistency = Callable[[Tensor], Tensor]


# ---------------------------------------------------------------- super-resolution operator

@functools.lru_cache(maxsize=64)
def resample_matrix(n_in: int, n_out: int) -> Tensor:
    """M [n_out, n_in] (float64, CPU) with M v = F.interpolate(v, n_out, bicubic, antialias) for 1D v.

    Built by interpolating the n_in identity vectors (one per batch entry) along one axis; the
    other axis has size 1 -> 1, which torch resamples with the identity. Do not modify in place (cached).
    """
    if n_in < 1 or n_out < 1:
        raise InputError(f"resampling {n_in} -> {n_out} pixels: expected sizes >= 1")
    eye = torch.eye(n_in, dtype=torch.float64).reshape(n_in, 1, 1, n_in)
    cols = F.interpolate(eye, size=(1, n_out), mode="bicubic", antialias=True, align_corners=False)
    return cols.reshape(n_in, n_out).T.contiguous()


@functools.lru_cache(maxsize=64)
def resample_pinv(n_in: int, n_out: int) -> Tensor:
    """M^+ [n_in, n_out] (float64): the Moore-Penrose pseudo-inverse of resample_matrix (torch.linalg.pinv)."""
    return torch.linalg.pinv(resample_matrix(n_in, n_out))


def low_res_size(size: tuple[int, int], factor: float) -> tuple[int, int]:
    """(h, w) = (round(H / factor), round(W / factor)), at least 1: the size SuperResolution measures."""
    return tuple(max(1, round(s / factor)) for s in size)  # type: ignore[return-value]


def _mats(size: tuple[int, int], lr: tuple[int, int], pinv: bool, like: Tensor) -> tuple[Tensor, Tensor]:
    get = resample_pinv if pinv else resample_matrix
    return get(size[0], lr[0]).to(like.device), get(size[1], lr[1]).to(like.device)


def sr_forward(x: Tensor, lr: tuple[int, int]) -> Tensor:
    """A x = M_H x M_W^T: [..., H, W] -> [..., h, w] in float64 (anti-aliased bicubic, no clamp)."""
    mh, mw = _mats(tuple(x.shape[-2:]), lr, False, x)
    return mh @ x.double() @ mw.T


def sr_pinv(r: Tensor, size: tuple[int, int]) -> Tensor:
    """A^+ r = M_H^+ r (M_W^+)^T: [..., h, w] -> [..., H, W] in float64 (minimum-norm preimage)."""
    ph, pw = _mats(size, tuple(r.shape[-2:]), True, r)
    return ph @ r.double() @ pw.T


def clamped_target(ax: Tensor, y: Tensor) -> Tensor:
    """The value A x must take so that clamp(A x, -1, 1) = y.

    meddiff's measurement is clamp(A x0, -1, 1) (SuperResolution.downsample clamps): where y sits
    at a bound, any A x beyond that bound is consistent, so the target is A x itself pushed to
    the bound only if it lies inside; elsewhere the target is y. Projecting onto A x = y instead
    would pull edge pixels towards the clamp value (about 5-11% of the low-res pixels of a
    skull-stripped brain sit at -1 with A x0 < -1).
    """
    return torch.where(y <= -1.0, torch.minimum(ax, y), torch.where(y >= 1.0, torch.maximum(ax, y), y))


def sr_project(x: Tensor, y: Tensor) -> Tensor:
    """P_y(x) = x + A^+ (y' - A x): the closest x' to x with clamp(A x', -1, 1) = y (x [..., H, W], y [..., h, w]),
    y' = clamped_target(A x, y) (= y wherever y is inside (-1, 1)).

    Computed in float64 and returned in x's dtype, so the equality holds up to x's rounding.
    """
    lr = tuple(y.shape[-2:])
    x64 = x.double()
    ax = sr_forward(x64, lr)
    return (x64 + sr_pinv(clamped_target(ax, y.double()) - ax, tuple(x.shape[-2:]))).to(x.dtype)


def sr_consistency_error(x: Tensor, y: Tensor) -> Tensor:
    """Per-image RMS of (clamp(A x, -1, 1) - y) over [..., h, w] in the [-1, 1] image units: [B] float64.

    The measurement model is the degradation's own: anti-aliased bicubic downsampling, clamped.
    """
    d = sr_forward(x, tuple(y.shape[-2:])).clamp(-1.0, 1.0) - y.double()
    return d.flatten(1).pow(2).mean(1).sqrt()


def thick_project(x: Tensor, y: Tensor, factor: int, dim: int) -> Tensor:
    """P_y(x) = x + R (y - A x): the closest x' to x whose thick slices along `dim` (means of `factor`
    neighbours, meddiff.data.thick) equal y; x [..., n f, ...], y [..., n, ...]; float64 inside."""
    from ..data.thick import thick_slices

    x64 = x.double()
    r = y.double() - thick_slices(x64, factor, dim)
    return (x64 + r.repeat_interleave(factor, dim=dim)).to(x.dtype)


@dataclass(frozen=True)
class SRProjection:
    """x0 -> P_y(x0) on the leading `size` of the image (the rest, network padding, is left as is).

    lowres: the measurements y [B, 1, h, w] (or [B, 1, d, h, w] for volumes, projected slice by slice
    in-plane); size: the restored grid's spatial size (H, W) or (D, H, W), with round(H / factor) = h
    (checked by the caller that knows the factor). thick > 0: y holds thick slices of `thick` slices
    along spatial axis `axis` instead (thick_project).
    """

    lowres: Tensor
    size: tuple[int, ...]
    thick: int = 0
    axis: int = 0

    def _project(self, x: Tensor) -> Tensor:
        y = self.lowres.to(x.device)
        return thick_project(x, y, self.thick, 2 + self.axis) if self.thick else sr_project(x, y)

    def __call__(self, x: Tensor) -> Tensor:
        if tuple(x.shape[2:]) == tuple(self.size):
            return self._project(x)
        crop = (..., *(slice(0, s) for s in self.size))
        out = x.clone()
        out[crop] = self._project(x[crop])
        return out


# ---------------------------------------------------------------- inpainting

def replace_known(x: Tensor, known: Tensor, mask: Tensor) -> Tensor:
    """mask * x + (1 - mask) * known with mask in {0, 1} (1 = hole), written as a selection so the
    known pixels are copied bit for bit."""
    return torch.where(mask.to(x.device) > 0.5, x, known.to(x.device, x.dtype))


@dataclass(frozen=True)
class KnownPixels:
    """x0 -> x0 with its known pixels (mask = 0) replaced by the measured image `known` [B, 1, H, W]."""

    known: Tensor
    mask: Tensor

    def __call__(self, x: Tensor) -> Tensor:
        return replace_known(x, self.known, self.mask)


@dataclass(frozen=True)
class RePaint:
    """RePaint conditioning for sample_ancestral (Lugmayr et al. 2022, Algorithm 1).

    known [B, 1, H, W] image with the measured pixels, mask [B, 1, H, W] (1 = hole),
    resample = U >= 1 evaluations per step: after each of the first U - 1 the chain jumps back
    x_t ~ q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I). U = 1 is plain replacement.
    Calling it applies the final replacement (output known pixels = measurement exactly).
    """

    known: Tensor
    mask: Tensor
    resample: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.resample, int) or self.resample < 1:
            raise InputError(f"resample {self.resample!r}: expected an integer >= 1")

    def __call__(self, x: Tensor) -> Tensor:
        return replace_known(x, self.known, self.mask)


def noised_known(z_known: Tensor, alpha_bar_prev: float, eps: Tensor | None) -> Tensor:
    """x_{t-1}^known = sqrt(ab_{t-1}) x0 + sqrt(1 - ab_{t-1}) eps  (RePaint Alg. 1 line 5 = Ho et al. eq. 4)."""
    if eps is None:  # the clean end, ab = 1
        return z_known
    return alpha_bar_prev**0.5 * z_known + (1.0 - alpha_bar_prev) ** 0.5 * eps


def jump_back(x_prev: Tensor, beta: float, z: Tensor) -> Tensor:
    """x_t ~ q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)  (Ho et al. eq. 2; RePaint Alg. 1 line 9)."""
    return (1.0 - beta) ** 0.5 * x_prev + beta**0.5 * z


# ---------------------------------------------------------------- per-dataset measurements (inference.restore)

MODES = ("none", "project", "repaint")


@dataclass(frozen=True)
class Measurement:
    """What restore() needs to build each batch's consistency from the padded condition planes.

    task: "sr" or "inpaint"; mode: "project" or "repaint"; lowres (SR): y [N, 1, h, w] for the
    N slices (or [N, 1, d, h, w] for N volumes); size (SR): their restored spatial size; resample:
    RePaint's U; thick, axis (SR): y are thick slices of `thick` slices along spatial axis `axis`.
    """

    task: str
    mode: str
    lowres: Tensor | None = None
    size: tuple[int, ...] | None = None
    resample: int = 1
    thick: int = 0
    axis: int = 0

    def for_batch(self, start: int, padded: Tensor) -> Consistency:
        """The consistency of slices start .. start + len(padded) - 1 (padded: their network-size cond planes)."""
        if self.task == "sr":
            assert self.lowres is not None and self.size is not None
            return SRProjection(self.lowres[start : start + padded.shape[0]], self.size, self.thick, self.axis)
        known, mask = padded[:, :1], padded[:, 1:2]
        return RePaint(known, mask, self.resample) if self.mode == "repaint" else KnownPixels(known, mask)


def check_request(task: str, mode: str, resample: int = 1) -> None:
    """InputError unless `mode` (none | project | repaint) with RePaint's `resample` makes sense for `task`."""
    if mode not in MODES:
        raise InputError(f"consistency {mode!r}: expected one of {list(MODES)}")
    if not isinstance(resample, int) or resample < 1:
        raise InputError(f"resample {resample!r}: expected an integer >= 1")
    if resample > 1 and mode != "repaint":
        raise InputError(f"resample {resample} applies to consistency 'repaint' only, not {mode!r}")
    if mode == "none":
        return
    if task == "denoise":
        raise InputError(f"consistency {mode!r}: denoising has no measurement operator to be consistent with; use 'none'")
    if task not in ("sr", "inpaint"):
        raise InputError(f"task {task!r}: expected 'sr', 'denoise' or 'inpaint'")
    if mode == "repaint" and task != "inpaint":
        raise InputError(f"consistency 'repaint' is for inpainting; this task is {task!r} (use 'project')")


def measurement_for(task: str, mode: str, cond: Tensor, *, factor: float | None = None,
                    lowres: Tensor | None = None, resample: int = 1) -> Measurement | None:
    """Validate a consistency request for a task and describe its measurement (None for mode "none").

    task "sr": y = `lowres` [N, 1, h, w] if given (the user's low-resolution images), else
    A(cond image plane) (the input was already upsampled: keep its low frequencies);
    task "inpaint": known pixels and mask are the condition planes [image, mask];
    task "denoise": no measurement operator -> InputError. mode "repaint": inpainting only.
    """
    check_request(task, mode, resample)
    if mode == "none":
        return None
    if task == "inpaint":
        if cond.ndim != 4 or cond.shape[1] != 2:
            raise InputError(f"inpainting condition of shape {tuple(cond.shape)}: expected [N, 2, H, W] (image, mask)")
        return Measurement(task, mode, resample=resample)
    size = tuple(cond.shape[-2:])
    if lowres is None:
        if factor is None:
            raise InputError("super-resolution consistency needs the low-resolution images or the factor")
        lowres = sr_forward(cond[:, :1], low_res_size(size, factor)).to(cond.dtype)
    if lowres.ndim != 4 or lowres.shape[:2] != (cond.shape[0], 1):
        raise InputError(f"low-resolution images of shape {tuple(lowres.shape)}: expected [{cond.shape[0]}, 1, h, w]")
    if factor is not None and low_res_size(size, factor) != tuple(lowres.shape[-2:]):
        raise InputError(f"low-resolution size {tuple(lowres.shape[-2:])}: expected {low_res_size(size, factor)} "
                         f"for a {size} image at factor {factor}")
    return Measurement(task, mode, lowres=lowres, size=size)  # type: ignore[arg-type]


def finalize(x: Tensor, consistency: Consistency | None) -> Tensor:
    """The sampler's returned image made consistent (no-op for None)."""
    return x if consistency is None else consistency(x)


def constrain_x0(z0: Tensor, base: Tensor, consistency: Consistency | None) -> Tensor:
    """Apply `consistency` to the diffused x0 estimate z0 in image space: c(z0 + base) - base."""
    return z0 if consistency is None else consistency(z0 + base) - base
