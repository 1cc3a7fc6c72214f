"""Error scales from what is available at inference, for one-call restorations too.

Super-resolution errors sit where the restored image has detail the measurement could not carry:
at edges (the local gradient magnitude of the restored image), where the model changed the
condition (|restored - condition|), where the truth has texture or noise the measurement averaged
away (the high-pass residue of the condition, and a noise estimate of the measurement), and, with
several samples, where samples disagree (their std).

- :func:`error_scale`: a fixed heuristic, the root sum of squares of three of them plus a floor.
- :func:`feature_stack` + :class:`ErrorRegressor`: the logs of all of them, combined linearly into
  log u by least squares on calibration pixels (a "learned error head" with a handful of
  coefficients, fitted on training-distribution images only; no network call).

conformal.py calibrates either scale.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from ..errors import InputError

EPS = 1e-4  # floor inside the logs, in [-1, 1] units


def error_scale(restored: np.ndarray, condition: np.ndarray, std: np.ndarray | None = None, *,
                smooth: float = 1.5, floor: float = 1e-3) -> np.ndarray:
    """u [H, W] > 0 from restored and condition [H, W] in [-1, 1] (and the sample std, if any):
    sqrt(G_s(|grad restored|)^2 + G_s(|restored - condition|)^2 + std^2) + floor, G_s a Gaussian of
    `smooth` pixels (scipy.ndimage)."""
    r = np.asarray(restored, np.float64)
    grad = ndimage.gaussian_filter(_grad(r), smooth)
    change = ndimage.gaussian_filter(np.abs(r - np.asarray(condition, np.float64)), smooth)
    total = grad**2 + change**2 + (0.0 if std is None else np.asarray(std, np.float64) ** 2)
    return np.sqrt(total) + floor


def _grad(a: np.ndarray) -> np.ndarray:
    """|grad a| per pixel (Sobel, scaled to a unit step per pixel)."""
    return np.hypot(ndimage.sobel(a, 0), ndimage.sobel(a, 1)) / 8.0


def noise_sigma(image: np.ndarray) -> float:
    """Std of white noise in a 2D image (Immerkaer, "Fast noise variance estimation", CVIU 1996):
    sigma = sqrt(pi / 2) / (6 (W - 2)(H - 2)) * sum |I * N|, N the 3x3 difference of two Laplacians."""
    a = np.asarray(image, np.float64)
    if min(a.shape) < 3:
        return 0.0
    n = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float64)
    conv = ndimage.convolve(a, n, mode="reflect")[1:-1, 1:-1]
    return float(np.sqrt(np.pi / 2) * np.abs(conv).sum() / (6 * conv.size))


FEATURES = ("grad_restored", "grad_condition", "change", "highpass_condition", "local_std", "noise", "intensity",
            "std")


def feature_stack(restored: np.ndarray, condition: np.ndarray, lowres: np.ndarray | None = None,
                  std: np.ndarray | None = None, *, smooth: float = 1.5) -> np.ndarray:
    """[F, H, W] per-pixel features of one restored image (FEATURES order; [-1, 1] units):
    log(G(|grad restored|) + eps), log(G(|grad condition|) + eps), log(G(|restored - condition|) + eps),
    log(G(|condition - G(condition)|) + eps), log(local std of restored in 5x5 + eps),
    log(noise sigma of the measurement `lowres` (one value; Immerkaer) + eps), restored intensity,
    log(std + eps) (0 without samples). `lowres`: the measurement itself (None: the condition)."""
    r, c = np.asarray(restored, np.float64), np.asarray(condition, np.float64)
    if r.shape != c.shape or r.ndim != 2:
        raise InputError(f"restored {r.shape} and condition {c.shape}: expected one 2D shape")
    g = lambda a: ndimage.gaussian_filter(a, smooth)  # noqa: E731
    mean = ndimage.uniform_filter(r, 5)
    local_std = np.sqrt(np.maximum(ndimage.uniform_filter(r * r, 5) - mean * mean, 0.0))
    sigma = noise_sigma(c if lowres is None else lowres)
    s = np.zeros_like(r) if std is None else np.log(np.asarray(std, np.float64) + EPS)
    return np.stack([np.log(g(_grad(r)) + EPS), np.log(g(_grad(c)) + EPS), np.log(g(np.abs(r - c)) + EPS),
                     np.log(g(np.abs(c - ndimage.gaussian_filter(c, 1.0))) + EPS), np.log(local_std + EPS),
                     np.full_like(r, np.log(sigma + EPS)), r, s])


@dataclass(frozen=True)
class ErrorRegressor:
    """log u = w . [1, features] (least squares of log(e^2 + eps^2) / 2 on the features, i.e. a
    predicted log error magnitude up to a constant that the conformal table absorbs)."""

    features: tuple[str, ...]
    weights: tuple[float, ...]  # intercept first, then one per feature
    note: str = ""

    def scale(self, stack: np.ndarray) -> np.ndarray:
        """u [H, W] > 0 from a feature_stack [F, H, W]."""
        idx = [FEATURES.index(f) for f in self.features]
        w = np.asarray(self.weights, np.float64)
        log_u = w[0] + np.tensordot(w[1:], np.asarray(stack, np.float64)[idx], axes=1)
        return np.exp(np.clip(log_u, -20.0, 5.0))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ErrorRegressor":
        return cls(tuple(d["features"]), tuple(float(w) for w in d["weights"]), d.get("note", ""))


def fit_regressor(stacks: np.ndarray, errors: np.ndarray, features: tuple[str, ...] = FEATURES[:-1],
                  note: str = "") -> ErrorRegressor:
    """Least squares of log(e^2 + eps^2) / 2 on [1, features] over calibration pixels: stacks
    [F, N] (feature_stack values, FEATURES order), errors [N] (restored - truth)."""
    unknown = [f for f in features if f not in FEATURES]
    if unknown:
        raise InputError(f"features {unknown}: expected names from {FEATURES}")
    x = np.asarray(stacks, np.float64)[[FEATURES.index(f) for f in features]].T
    e = np.asarray(errors, np.float64).ravel()
    if x.shape[0] != e.size:
        raise InputError(f"{x.shape[0]} feature rows for {e.size} errors; expected one per pixel")
    design = np.hstack([np.ones((e.size, 1)), x])
    w, *_ = np.linalg.lstsq(design, 0.5 * np.log(e * e + EPS * EPS), rcond=None)
    return ErrorRegressor(tuple(features), tuple(float(v) for v in w), note)
