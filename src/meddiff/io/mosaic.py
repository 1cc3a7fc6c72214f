"""Siemens mosaic images: one DICOM frame holding a grid of slices (``ImageType`` contains MOSAIC).

The number of slices comes from the Siemens CSA image header (private tag (0029,1010),
``NumberOfImagesInMosaic``), parsed with nibabel's CSA reader. The tiles are laid out row by
row in a square grid of ``ceil(sqrt(n))`` tiles per side. Geometry (PS3.3 C.7.6.2 plus the
Siemens convention also used by nibabel's MosaicWrapper): ImagePositionPatient of a mosaic is
the top-left pixel of the whole mosaic taken as one image of the tile's pixel spacing, so the
first slice's top-left pixel sits ``(mosaic_cols - cols) / 2`` pixels along the row direction and
``(mosaic_rows - rows) / 2`` along the column direction from it; slices follow the CSA
``SliceNormalVector`` (else row x column cosine) at SpacingBetweenSlices (else SliceThickness).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from meddiff.errors import InputError


def is_mosaic(ds: Dataset) -> bool:
    return any(str(t).strip().upper() == "MOSAIC" for t in (ds.get("ImageType") or []))


def _csareader():
    """nibabel's CSA header reader (importing nibabel.nicom warns that its DICOM *wrappers* are experimental;
    only the CSA parser is used here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        from nibabel.nicom import csareader  # noqa: PLC0415
    return csareader


def _csa_image(ds: Dataset) -> dict | None:
    csareader = _csareader()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return csareader.get_csa_header(ds, "image")
    except Exception:  # a damaged private header: treated as absent
        return None


def mosaic_count(ds: Dataset, path: Path) -> int:
    """Number of slices in the mosaic, from the CSA header; InputError naming `path` if it is not there."""
    csareader = _csareader()
    csa = _csa_image(ds)
    n = None
    if csa is not None:
        try:
            n = int(csareader.get_n_mosaic(csa))
        except Exception:
            n = None
    if not n or n < 1:
        raise InputError(f"{path}: Siemens mosaic (ImageType MOSAIC) without a readable NumberOfImagesInMosaic in its "
                         "CSA image header (0029,1010); cannot tell how many slices it holds. Expected an intact "
                         "Siemens mosaic, or convert it first (e.g. dcm2niix)")
    return n


def _normal(ds: Dataset, x_dir: np.ndarray, y_dir: np.ndarray) -> np.ndarray:
    csareader = _csareader()
    csa = _csa_image(ds)
    try:
        v = csareader.get_slice_normal(csa) if csa is not None else None
    except Exception:
        v = None
    normal = np.cross(x_dir, y_dir)
    if v is not None and len(v) == 3 and np.linalg.norm(np.asarray(v, float)) > 0.5:
        normal = np.asarray(v, float) / np.linalg.norm(np.asarray(v, float))
    return normal


def unpack(values: np.ndarray, ds: Dataset, path: Path) -> tuple[np.ndarray, int]:
    """Mosaic ``[R, C]`` -> slices ``[n, R/k, C/k]`` (k = ceil(sqrt(n)) tiles per side); returns (slices, k)."""
    n = mosaic_count(ds, path)
    k = math.ceil(math.sqrt(n))
    rows, cols = values.shape
    if values.ndim != 2 or rows % k or cols % k:
        raise InputError(f"{path}: Siemens mosaic of {rows}x{cols} pixels cannot hold {n} slices on a {k}x{k} grid; "
                         "expected its size to be a multiple of the grid")
    r, c = rows // k, cols // k
    tiles = values.reshape(k, r, k, c).transpose(0, 2, 1, 3).reshape(k * k, r, c)
    return np.ascontiguousarray(tiles[:n]), k


def geometry(ds: Dataset, k: int, shape: tuple[int, int], dy: float, dx: float
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float] | None:
    """(x_dir, y_dir, first-slice position (LPS), slice step (LPS), dz) or None without orientation/position."""
    iop, ipp = ds.get("ImageOrientationPatient"), ds.get("ImagePositionPatient")
    if iop is None or ipp is None or len(iop) != 6 or len(ipp) != 3:
        return None
    o = np.asarray([float(v) for v in iop])
    x_dir, y_dir = o[:3], o[3:]
    r, c = shape
    origin = np.asarray([float(v) for v in ipp]) + x_dir * dx * (k * c - c) / 2 + y_dir * dy * (k * r - r) / 2
    dz = 0.0
    for name in ("SpacingBetweenSlices", "SliceThickness"):
        if ds.get(name) not in (None, "") and float(ds.get(name)) > 0:
            dz = float(ds.get(name))
            break
    dz = dz or 1.0
    return x_dir, y_dir, origin, _normal(ds, x_dir, y_dir) * dz, dz
