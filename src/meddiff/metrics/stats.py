"""Uncertainty of evaluation results: per-patient (cluster) bootstrap CIs and paired tests.

Slices of one patient are not independent samples: neighbouring slices share anatomy,
scanner and noise, so a bootstrap that resamples *images* treats n correlated slices as n
independent observations and gives intervals that are too narrow. The unit of resampling is
therefore the patient (cluster bootstrap; Davison and Hinkley, "Bootstrap Methods and their
Application", 1997, section 3.8, "two-stage" / cluster resampling with the images of each
drawn cluster kept together; Field and Welsh, JRSS-B 69(3) 2007).

Statistic. For per-image values x_{c,i} (patient c = 1..C, image i = 1..n_c) the reported
mean is the pooled mean over images, theta = sum_c S_c / sum_c n_c with S_c = sum_i x_{c,i}.
One bootstrap replicate draws C patients with replacement, c*_1..c*_C, and recomputes
theta* = sum_k S_{c*_k} / sum_k n_{c*_k} (eq. B1). The 95% interval is the percentile interval
[q_{2.5%}(theta*), q_{97.5%}(theta*)] (Efron and Tibshirani, "An Introduction to the
Bootstrap", 1993, eq. 13.5). With one patient there is nothing to resample between patients:
the images are resampled instead and the interval describes slice-to-slice variation only.

Paired comparison of methods A and B scored on the same images: d_{c,i} = x^A_{c,i} - x^B_{c,i};
its mean and cluster-bootstrap CI use eq. B1 on d (the pairing is kept because each image's
two scores are resampled together). The Wilcoxon signed-rank test (Wilcoxon 1945, via
``scipy.stats.wilcoxon``) assumes independent differences, so it is run on per-patient mean
differences when there are enough patients for it to reach p < 0.05 at all (n >= 6: the
smallest exact two-sided p with n pairs is 2 / 2^n), else on per-image differences, and the
result says which (per-image p-values ignore the within-patient correlation and are optimistic).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import InputError

N_RESAMPLES = 2000
SEED = 0
LEVEL = 0.95
# Wilcoxon over per-patient means needs n >= 6 patients (min exact two-sided p = 2/2^n < 0.05)
MIN_PATIENTS_FOR_PATIENT_TEST = 6


@dataclass(frozen=True)
class BootstrapCI:
    """Mean of per-image values with a percentile bootstrap interval.

    unit: what was resampled, "patients" or "images" (one patient, or no patient ids).
    """

    mean: float
    lo: float
    hi: float
    n_images: int
    n_clusters: int
    unit: str
    level: float = LEVEL


@dataclass(frozen=True)
class PairedResult:
    """Method A minus method B on the same images: mean difference, its CI, and a Wilcoxon test.

    test_unit: "patients" (per-patient mean differences) or "images" (per-image differences);
    p_value is nan when there is no non-zero difference to rank.
    """

    diff: BootstrapCI
    p_value: float
    statistic: float
    test_unit: str
    n_test: int  # number of (non-zero) differences the test ranked


def _values_and_clusters(values: Sequence[float], clusters: Sequence[object] | None) -> tuple[np.ndarray, np.ndarray]:
    """Float64 values and integer cluster codes 0..C-1 (each image its own cluster if None)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise InputError("bootstrap needs at least one value, got none")
    if not np.all(np.isfinite(x)):
        raise InputError(f"bootstrap values contain {int(np.sum(~np.isfinite(x)))} NaN/inf; expected finite per-image metrics")
    if clusters is None:
        return x, np.arange(x.size)
    labels = list(clusters)
    if len(labels) != x.size:
        raise InputError(f"got {x.size} values but {len(labels)} cluster (patient) labels; expected one label per value")
    _, codes = np.unique(np.asarray([str(c) for c in labels]), return_inverse=True)
    return x, codes.ravel()


def resample_indices(n_clusters: int, n_resamples: int = N_RESAMPLES, seed: int = SEED) -> np.ndarray:
    """``[n_resamples, n_clusters]`` cluster indices drawn uniformly with replacement (fixed ``seed``).

    The same seed gives the same draws for every method, so per-method intervals share their
    resamples (common random numbers) and the paired interval uses the identical draws.
    """
    if n_clusters < 1 or n_resamples < 1:
        raise InputError(f"need n_clusters >= 1 and n_resamples >= 1, got {n_clusters} and {n_resamples}")
    return np.random.default_rng(seed).integers(0, n_clusters, size=(n_resamples, n_clusters))


def cluster_bootstrap_means(x: np.ndarray, codes: np.ndarray, n_resamples: int = N_RESAMPLES,
                            seed: int = SEED) -> np.ndarray:
    """Bootstrap replicates theta* of the pooled mean (eq. B1 of the module docstring), ``[n_resamples]``.

    x: per-image values; codes: cluster index 0..C-1 of each value.
    """
    n_c = np.bincount(codes).astype(np.float64)
    s_c = np.bincount(codes, weights=x)
    idx = resample_indices(n_c.size, n_resamples, seed)
    return s_c[idx].sum(axis=1) / n_c[idx].sum(axis=1)


def percentile_interval(replicates: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval [q_{(1-level)/2}, q_{(1+level)/2}] of bootstrap replicates (Efron and Tibshirani 1993, eq. 13.5)."""
    if not 0 < level < 1:
        raise InputError(f"confidence level must be in (0, 1), got {level}")
    lo, hi = np.quantile(replicates, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def bootstrap_ci(values: Sequence[float], clusters: Sequence[object] | None = None, *, n_resamples: int = N_RESAMPLES,
                 seed: int = SEED, level: float = LEVEL) -> BootstrapCI:
    """Mean of ``values`` with a cluster-bootstrap percentile CI (resampling ``clusters``, e.g. patient ids).

    ``clusters=None`` or a single cluster: the images themselves are resampled (unit "images").
    A single value gives the degenerate interval [x, x].
    """
    x, codes = _values_and_clusters(values, clusters)
    n_clusters = int(codes.max()) + 1
    unit = "patients"
    if clusters is None or n_clusters == 1:
        codes, n_clusters, unit = np.arange(x.size), x.size, "images"
    reps = cluster_bootstrap_means(x, codes, n_resamples, seed)
    lo, hi = percentile_interval(reps, level)
    return BootstrapCI(float(x.mean()), lo, hi, int(x.size), int(np.unique(codes).size), unit, level)


def cluster_means(values: Sequence[float], clusters: Sequence[object]) -> np.ndarray:
    """Per-cluster means of ``values`` (clusters in sorted label order)."""
    x, codes = _values_and_clusters(values, clusters)
    return np.bincount(codes, weights=x) / np.bincount(codes)


def wilcoxon_signed_rank(differences: Sequence[float]) -> tuple[float, float, int]:
    """Two-sided Wilcoxon signed-rank test of median 0 (Wilcoxon 1945) on paired differences.

    Zero differences are dropped (Wilcoxon's original treatment, scipy's ``zero_method="wilcox"``);
    scipy chooses the exact null distribution for small samples without ties and the normal
    approximation otherwise. Returns (statistic = min(W+, W-), p-value, number of non-zero
    differences); p = nan when every difference is zero (nothing to rank).
    """
    from scipy import stats

    d = np.asarray(differences, dtype=np.float64).ravel()
    if not np.all(np.isfinite(d)):
        raise InputError("Wilcoxon test: differences contain NaN/inf")
    nz = int(np.count_nonzero(d))
    if nz == 0:
        return float("nan"), float("nan"), 0
    res = stats.wilcoxon(d[d != 0], zero_method="wilcox", alternative="two-sided")
    return float(res.statistic), float(res.pvalue), nz


def paired_comparison(a: Sequence[float], b: Sequence[float], clusters: Sequence[object] | None = None, *,
                      n_resamples: int = N_RESAMPLES, seed: int = SEED, level: float = LEVEL,
                      min_patients_for_test: int = MIN_PATIENTS_FOR_PATIENT_TEST) -> PairedResult:
    """A minus B, image by image: mean difference, cluster-bootstrap CI, Wilcoxon signed-rank p.

    a, b: per-image values of two methods on the same images, in the same order.
    The test runs on per-patient mean differences when there are at least
    ``min_patients_for_test`` patients, else on per-image differences (see module docstring).
    """
    xa, xb = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if xa.shape != xb.shape:
        raise InputError(f"paired comparison needs the same images for both methods, got {xa.size} and {xb.size} values")
    d = xa - xb
    ci = bootstrap_ci(d, clusters, n_resamples=n_resamples, seed=seed, level=level)
    if clusters is not None and ci.unit == "patients" and ci.n_clusters >= min_patients_for_test:
        stat, p, n = wilcoxon_signed_rank(cluster_means(d, clusters))
        unit = "patients"
    else:
        stat, p, n = wilcoxon_signed_rank(d)
        unit = "images"
    return PairedResult(ci, p, stat, unit, n)


# --------------------------------------------------------------------------- set-level metrics (FID, KID)
#
# FID and KID compare the *set* of a method's outputs with the set of ground-truth images, so
# there is no per-image value to average. Their CIs resample the images instead (eq. B2): one
# replicate draws C patients (or, with one patient, the N images) with replacement and keeps
# every drawn image's prediction *and* ground truth, so both sets change together (the pairing
# of the two sets is kept as the per-image bootstrap keeps it). A replicate is a vector of
# frequency weights w_i = how often image i was drawn (sum w = N* images), and the set metric is
# recomputed with those weights (eqs. W1, W2) without copying features.


def resample_weights(codes: np.ndarray, n_resamples: int = N_RESAMPLES, seed: int = SEED) -> np.ndarray:
    """Frequency weights ``[n_resamples, N]`` of a cluster bootstrap of N images (eq. B2).

    codes: cluster index 0..C-1 of each image. Each replicate draws C clusters with replacement
    (:func:`resample_indices`, so the same seed gives the same draws as the per-image CIs) and
    w_i = number of times the cluster of image i was drawn.
    """
    codes = np.asarray(codes).ravel()
    idx = resample_indices(int(codes.max()) + 1, n_resamples, seed)
    counts = np.stack([np.bincount(row, minlength=int(codes.max()) + 1) for row in idx])
    return counts[:, codes].astype(np.float64)


def weighted_fid(f1: np.ndarray, f2: np.ndarray, w: np.ndarray) -> float:
    """FID (Heusel et al. 2017) of two feature sets ``[N, D]`` whose rows carry frequency weights ``w`` (eq. W1).

    Weighted mean mu = sum w_i f_i / W and unbiased frequency-weighted covariance
    S = sum w_i (f_i - mu)(f_i - mu)^T / (W - 1), W = sum w_i: exactly the mean and covariance of
    the resampled multiset. For N <= D the distance is taken in the low-rank form of
    :mod:`meddiff.metrics.fid_lowrank` with A = diag(sqrt(w)) (F - mu) / sqrt(W - 1):
    d^2 = ||mu1 - mu2||^2 + ||A1||_F^2 + ||A2||_F^2 - 2 ||A1 A2^T||_*. With w = 1 this is the plain FID.
    """
    x, y, w = np.asarray(f1, np.float64), np.asarray(f2, np.float64), np.asarray(w, np.float64).ravel()
    if x.shape != y.shape or x.ndim != 2 or w.size != x.shape[0]:
        raise InputError(f"weighted FID needs two [N, D] feature sets of one shape and N weights, got {x.shape}, {y.shape}, {w.size}")
    keep = w > 0
    x, y, w = x[keep], y[keep], w[keep]
    total = float(w.sum())
    if total < 2:
        raise InputError(f"weighted FID needs a total weight >= 2, got {total:g}")
    mu1, mu2 = w @ x / total, w @ y / total
    a1 = np.sqrt(w)[:, None] * (x - mu1) / np.sqrt(total - 1)
    a2 = np.sqrt(w)[:, None] * (y - mu2) / np.sqrt(total - 1)
    if x.shape[0] <= x.shape[1]:
        nuclear = float(np.linalg.svd(a1 @ a2.T, compute_uv=False).sum())
        value = float(np.sum((mu1 - mu2) ** 2) + np.sum(a1 * a1) + np.sum(a2 * a2) - 2.0 * nuclear)
        return max(value, 0.0)
    from .fid import frechet_distance

    return frechet_distance(mu1, a1.T @ a1, mu2, a2.T @ a2)


def weighted_mmd2(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray, w: np.ndarray) -> float:
    """Unbiased MMD^2 (Gretton et al. 2012, eq. 3) of a resampled multiset given as weights ``w`` (eq. W2).

    Within a set, the U-statistic averages k over pairs of *different images*: copies of one
    image drawn twice are not paired with each other (a tie would add k(x, x), the largest
    kernel value, and bias MMD^2 upwards), so

        MMD^2_w = (w^T Kxx w - sum w_i^2 Kxx_ii) / (W^2 - sum w_i^2)
                + (w^T Kyy w - sum w_i^2 Kyy_ii) / (W^2 - sum w_i^2) - 2 w^T Kxy w / W^2,

    W = sum w_i. With w = 1 it is :func:`meddiff.metrics.fid.mmd2_unbiased` over all images.
    """
    w = np.asarray(w, np.float64).ravel()
    total, sq = float(w.sum()), float(np.sum(w * w))
    if total * total - sq <= 0:
        raise InputError("weighted MMD^2 needs at least 2 distinct images in the resample")
    sxx = (w @ kxx @ w - np.sum(w * w * np.diag(kxx))) / (total * total - sq)
    syy = (w @ kyy @ w - np.sum(w * w * np.diag(kyy))) / (total * total - sq)
    return float(sxx + syy - 2.0 * (w @ kxy @ w) / (total * total))


@dataclass(frozen=True)
class SetBootstrap:
    """Percentile bootstrap intervals of FID and KID (eq. B2) and how they were made."""

    fid_lo: float
    fid_hi: float
    kid_lo: float
    kid_hi: float
    n_resamples: int
    unit: str  # "patients" or "images"
    n_clusters: int
    fid_shift: float  # bootstrap bias estimate of FID removed from its interval (mean of replicates - estimate)


def set_bootstrap(f_pred: np.ndarray, f_truth: np.ndarray, clusters: Sequence[object] | None, *, fid: float,
                  n_resamples: int = 200, seed: int = SEED, level: float = LEVEL) -> SetBootstrap:
    """CIs of FID and KID between a method's features and the ground truth's, resampling patients (eq. B2).

    KID replicates are :func:`weighted_mmd2` over all resampled images (polynomial kernel of
    :func:`meddiff.metrics.fid.polynomial_kernel`), an unbiased statistic, so its percentile
    interval is used as is. FID is biased upwards by a term ~ 1/(number of distinct images)
    (Chong and Forsyth 2020), and a resample holds only about 63% distinct images, so FID
    replicates sit above the estimate; the FID interval is the percentile interval shifted down by
    the bootstrap bias estimate b = mean(FID*) - FID (Efron and Tibshirani 1993, section 10.6),
    i.e. [q_lo - b, q_hi - b], which keeps the spread and removes the resampling's extra bias.
    """
    from .fid import polynomial_kernel

    x, y = np.asarray(f_pred, np.float64), np.asarray(f_truth, np.float64)
    if x.shape != y.shape:
        raise InputError(f"set bootstrap needs paired feature sets of one shape, got {x.shape} and {y.shape}")
    n = x.shape[0]
    if clusters is None:
        codes, unit = np.arange(n), "images"
    else:
        _, codes = _values_and_clusters(np.zeros(n), clusters)
        unit = "patients"
        if int(codes.max()) == 0:
            codes, unit = np.arange(n), "images"
    weights = resample_weights(codes, n_resamples, seed)
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    fids, kids = [], []
    for w in weights:
        if np.count_nonzero(w) < 2:  # a replicate of one distinct image has no covariance: skip it
            continue
        fids.append(weighted_fid(x, y, w))
        kids.append(weighted_mmd2(kxx, kyy, kxy, w))
    if len(fids) < 2:
        raise InputError(f"FID/KID bootstrap: fewer than 2 usable resamples out of {n_resamples} "
                         f"({int(codes.max()) + 1} {unit}); need at least 2 distinct images per resample")
    f = np.asarray(fids)
    shift = float(f.mean() - fid)
    f_lo, f_hi = percentile_interval(f, level)
    k_lo, k_hi = percentile_interval(np.asarray(kids), level)
    return SetBootstrap(f_lo - shift, f_hi - shift, k_lo, k_hi, len(fids), unit, int(codes.max()) + 1, shift)
