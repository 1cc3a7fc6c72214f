"""Exact FID for feature sets smaller than the feature dimension, in O(N1 N2 D) instead of O(D^3).

With N images and D = 2048 Inception features (N < D in nearly every medical study) the
unbiased covariances are S_i = A_i^T A_i, where A_i = (F_i - 1 mu_i^T) / sqrt(N_i - 1) is the
centred feature matrix ``[N_i, D]``. The nonzero eigenvalues of S1 S2 = A1^T (A1 A2^T A2) equal
those of (A1 A2^T A2) A1^T = M M^T with M = A1 A2^T ``[N1, N2]`` (XY and YX share their nonzero
eigenvalues), so

    Tr((S1 S2)^{1/2}) = sum_k sigma_k(M) = ||A1 A2^T||_*     (nuclear norm),
    Tr(S_i) = ||A_i||_F^2,

and the Frechet distance of Heusel et al. (2017),
d^2 = ||mu1 - mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^{1/2}), becomes (eq. L1)

    d^2 = ||mu1 - mu2||^2 + ||A1||_F^2 + ||A2||_F^2 - 2 ||A1 A2^T||_*.

This is the same number as :func:`meddiff.metrics.fid.fid_from_features` (which eigendecomposes
D x D matrices: about 10 s per method on one CPU core), without any matrix square root.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError


def centred_scaled(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mu ``[D]``, A = (F - mu) / sqrt(N - 1) ``[N, D]``) so that A^T A is the unbiased covariance."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise InputError(f"features must be [N, D] with N >= 2 to estimate a covariance, got shape {f.shape}")
    if not np.all(np.isfinite(f)):
        raise InputError("features contain NaN/inf")
    mu = f.mean(axis=0)
    return mu, (f - mu) / np.sqrt(f.shape[0] - 1)


def fid_low_rank(f1: np.ndarray, f2: np.ndarray) -> float:
    """FID between feature sets ``[N1, D]`` and ``[N2, D]`` by eq. L1 of the module docstring."""
    mu1, a1 = centred_scaled(f1)
    mu2, a2 = centred_scaled(f2)
    if a1.shape[1] != a2.shape[1]:
        raise InputError(f"feature sets differ in dimension: {a1.shape[1]} vs {a2.shape[1]}")
    nuclear = float(np.linalg.svd(a1 @ a2.T, compute_uv=False).sum())
    value = float(np.sum((mu1 - mu2) ** 2) + np.sum(a1 * a1) + np.sum(a2 * a2) - 2.0 * nuclear)
    return max(value, 0.0)
