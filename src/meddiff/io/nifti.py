"""NIfTI (.nii, .nii.gz) via nibabel.

Axis convention: nibabel's data are indexed ``[i, j, k]`` (x fastest on disk); meddiff
returns them transposed, ``[Z, Y, X] = data.T`` (``[k, j, i]``), and permutes the affine's
columns to match, so ``affine @ (z, y, x, 1)`` gives the same RAS+ mm point as nibabel's
``img.affine @ (i, j, k, 1)`` with ``(i, j, k) = (x, y, z)``. Extra axes (time) come first:
``[T, Z, Y, X]``. Writing does the exact inverse, so geometry round-trips.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from meddiff.errors import InputError
from meddiff.io._raw import RawImage, reading


def is_nifti(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def nifti_stem(path: Path) -> str:
    name = path.name
    for ext in (".nii.gz", ".nii"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return path.stem


# (header size, offset and type of dim[8], offset and type of pixdim[8], offset of scl_slope) of NIfTI-1 and NIfTI-2
_HEADERS = ((348, 40, "i2", 76, "f4", 112), (540, 16, "i8", 104, "f8", 176))


def _check_pixdim(path: Path) -> None:
    """InputError when a voxel size (pixdim[1..3]) of an axis longer than 1 is zero, negative or not finite in the
    header (nibabel replaces it by 1, or its absolute value, with only a log warning), or the intensity scaling is
    infinite."""
    try:
        with nib.openers.ImageOpener(str(path)) as f:
            head = f.read(544)
    except Exception:  # noqa: BLE001 - nib.load reports an unreadable file
        return
    for size, dim_at, dim_t, pix_at, pix_t, scl_at in _HEADERS:
        for order in "<>":
            if len(head) < size or int(np.frombuffer(head[:4], order + "i4")[0]) != size:
                continue
            dims = np.frombuffer(head[dim_at:dim_at + 8 * int(dim_t[1])], order + dim_t)
            pix = np.frombuffer(head[pix_at:pix_at + 8 * int(pix_t[1])], order + pix_t)
            n = int(dims[0]) if 1 <= dims[0] <= 7 else 0
            for i in range(1, min(n, 3) + 1):
                if dims[i] > 1 and not (np.isfinite(pix[i]) and pix[i] > 0):
                    raise InputError(f"{path}: NIfTI header pixdim[{i}] (voxel size along axis {i}) is {float(pix[i]):g}; "
                                     "expected a positive voxel size")
            scl = np.frombuffer(head[scl_at:scl_at + 2 * int(pix_t[1])], order + pix_t)
            for name, value in zip(("scl_slope", "scl_inter"), scl):
                if np.isinf(value):  # nibabel ignores it (no scaling) without a word
                    raise InputError(f"{path}: NIfTI header {name} is {float(value):g}; expected a finite intensity scaling "
                                     "(or 0 / NaN for none)")
            return


def read_nifti(path: Path) -> RawImage:
    """NIfTI-1/2 file -> RawImage with array ``[.., Z, Y, X]`` (scl_slope/inter applied)."""
    _check_pixdim(path)
    with reading(path, "NIfTI"):
        img = nib.load(str(path))
        kind = np.dtype(img.get_data_dtype()).kind
        if kind == "c" or kind not in "biuf":
            raise InputError(f"{path}: NIfTI data type {img.get_data_dtype()} is not real-valued (complex, e.g. raw k-space "
                             "or phase data); expected real intensities: save the magnitude (abs) first")
        data = np.asarray(img.get_fdata(dtype=np.float32))
    if data.ndim < 2:
        raise InputError(f"{path}: NIfTI data have shape {data.shape}; expected a 2D image or 3D volume")
    zooms = [float(z) for z in img.header.get_zooms()]
    if data.ndim == 2:
        data = data[:, :, None]
        zooms = zooms[:2] + [1.0]
    array = data.T  # [.., Z, Y, X]
    affine = np.asarray(img.affine, float)[:, [2, 1, 0, 3]]
    spacing = tuple(zooms[2::-1])  # (dz, dy, dx)
    code = int(img.header["sform_code"]) or int(img.header["qform_code"])
    meta = {"format": "nifti", "units": "arbitrary", "modality": "", "nifti_dtype": str(img.get_data_dtype()),
            "geometry": "nifti" if code else "none (nibabel default)"}
    return RawImage(np.ascontiguousarray(array), spacing, affine, meta, None)


def write_nifti(array_zyx: np.ndarray, affine: np.ndarray, path: Path, description: str) -> None:
    """Write ``[Z, Y, X]`` (or 2D ``[Y, X]``, stored as X x Y x 1) float32 with the RAS+ affine
    in meddiff order; sform and qform both set (code 2, aligned), units mm."""
    arr = np.asarray(array_zyx, np.float32)
    affine = np.asarray(affine, float)
    if arr.ndim == 2:
        data = arr.T[:, :, None]
        nib_affine = affine[:, [1, 0, 2, 3]]
    else:
        data = arr.T
        nib_affine = affine[:, [2, 1, 0, 3]]
    img = nib.Nifti1Image(np.ascontiguousarray(data), nib_affine)
    img.set_sform(nib_affine, code=2)
    img.set_qform(nib_affine, code=2)
    img.header.set_xyzt_units("mm")
    img.header["descrip"] = description.encode("ascii", "replace")[:79]
    nib.save(img, str(path))
