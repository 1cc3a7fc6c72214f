"""Classical (non-learned) restoration baselines from scikit-image, on 2D slices in [-1, 1].

- ``median``: median filter over a k x k square (Tukey; the classic remedy for salt-and-pepper noise;
  scipy.ndimage, a core dependency).
- ``nlm``: non-local means (Buades et al., CVPR 2005): each pixel becomes a weighted mean of
  pixels whose surrounding patches look alike, weights exp(-max(d^2 - 2 sigma^2, 0) / h^2) for
  the mean squared patch distance d^2 (scikit-image's ``denoise_nl_means``, fast mode, with the
  noise sigma subtracted). sigma is estimated per slice by ``estimate_sigma`` (Donoho and
  Johnstone's wavelet MAD estimate) and h = 0.8 sigma, as scikit-image recommends.
- ``biharmonic``: inpainting by the solution of the biharmonic equation Delta^2 u = 0 inside the
  hole with the known pixels as boundary values (Damelin and Hoang 2018;
  ``inpaint_biharmonic``).

scikit-image (nlm, biharmonic) and PyWavelets (nlm's sigma estimate) are optional dependencies
(``pip install meddiff[baselines]``); a missing import
raises InputError naming it. ``meddiff sample --method NAME`` runs these on the same inputs and
with the same reading/normalising/writing as a trained model.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError

METHOD_TASKS = {"median": "denoise", "nlm": "denoise", "biharmonic": "inpaint"}  # method -> task kind


def _restoration(wavelets: bool = False):
    """skimage.restoration; wavelets=True also checks PyWavelets (estimate_sigma needs it)."""
    try:
        from skimage import restoration
    except ImportError:
        raise InputError("the classical baselines need scikit-image: pip install 'meddiff[baselines]' "
                         "(or pip install scikit-image)") from None
    if wavelets:
        try:
            import pywt  # noqa: F401
        except ImportError:
            raise InputError("non-local means estimates the noise with PyWavelets: pip install 'meddiff[baselines]' "
                             "(or pip install PyWavelets)") from None
    return restoration


def _check_image(img: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(img, dtype=np.float64)
    if a.ndim != 2:
        raise InputError(f"{name}: expected a 2D slice [H, W], got shape {a.shape}")
    if not np.isfinite(a).all():
        raise InputError(f"{name}: the image contains NaN or infinite values")
    return a


def median_filter(img: np.ndarray, size: int = 3) -> np.ndarray:
    """Median of each size x size neighbourhood (mirror-reflected at the border)."""
    if size < 1 or size % 2 == 0:
        raise InputError(f"median filter size {size}: expected an odd integer >= 1")
    from scipy.ndimage import median_filter as scipy_median  # scipy is a core dependency

    a = _check_image(img, "median filter input")
    return scipy_median(a, size=size, mode="mirror")


def nl_means(img: np.ndarray, patch_size: int = 5, patch_distance: int = 6, h_factor: float = 0.8) -> np.ndarray:
    """Non-local means with sigma = estimate_sigma(img) and h = h_factor * sigma (module docstring)."""
    restoration = _restoration(wavelets=True)
    a = _check_image(img, "non-local means input")
    sigma = float(restoration.estimate_sigma(a))
    if sigma == 0:
        return a.copy()
    return restoration.denoise_nl_means(a, h=h_factor * sigma, sigma=sigma, fast_mode=True,
                                        patch_size=patch_size, patch_distance=patch_distance)


def biharmonic(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Fill the pixels where `mask` is nonzero by biharmonic inpainting; known pixels are kept."""
    restoration = _restoration()
    a = _check_image(img, "biharmonic input")
    m = np.asarray(mask) != 0
    if m.shape != a.shape:
        raise InputError(f"inpainting mask of shape {m.shape}, expected {a.shape} like the image")
    if m.all():
        raise InputError("inpainting mask covers the whole image: nothing is known to inpaint from")
    if not m.any():
        return a.copy()
    return restoration.inpaint_biharmonic(a, m)


def classical_restore(method: str, planes: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Apply `method` to each slice of the condition planes [N, C, H, W] (C = 1, or 2 for inpainting: image with
    holes, mask) -> [1, N, 1, H, W] (one "sample"), clamped to [-1, 1]: the shape `meddiff sample` writes."""
    if method not in METHOD_TASKS:
        raise InputError(f"--method {method}: expected one of {sorted(METHOD_TASKS)}")
    out = torch.empty(planes.shape[0], 1, *planes.shape[-2:])
    for i in range(planes.shape[0]):
        img = planes[i, 0].double().numpy()
        if method == "median":
            r = median_filter(img)
        elif method == "nlm":
            r = nl_means(img)
        else:
            r = biharmonic(img, mask[i, 0].numpy())
        out[i, 0] = torch.from_numpy(np.clip(r, -1.0, 1.0)).float()
    return out[None]
