"""Read any supported medical image into a :class:`Volume`, and find images in a folder.

Supported: DICOM (single image -> 2D, multi-frame -> 3D, series folder -> 3D), NIfTI
(.nii/.nii.gz), PNG/JPEG/BMP, TIFF (8/16/32-bit, multi-page), NumPy (.npy/.npz).
Array order is ``[Z, Y, X]`` (``[Y, X]`` for 2D), float32, original intensity units; the
affine is RAS+ (see :mod:`meddiff.io.geometry`). Every problem is an
:class:`meddiff.errors.InputError` naming the file and what was expected.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from meddiff.errors import InputError
from meddiff.io import dicom, mosaic, nifti, raster
from meddiff.io._raw import RawImage
from meddiff.io.geometry import squeeze_first_axis
from meddiff.io.sniff import mislabelled
from meddiff.io.volume import Volume

SUPPORTED = ("DICOM (.dcm or no extension with 'DICM' preamble, or a series folder), NIfTI (.nii, .nii.gz), "
             "PNG/JPEG/BMP, TIFF (.tif, .tiff), NumPy (.npy, .npz)")


@dataclass(frozen=True)
class ImageItem:
    """One readable image found by :func:`find_images`.

    path: the file, or for a DICOM series the folder holding it.
    patient_id: patient/case id chosen by ``patient_from``.
    kind: "dicom" (one file), "dicom_series" (files of one SeriesInstanceUID), "nifti",
          "raster" (PNG/JPEG/BMP), "tiff" or "numpy".
    files: the files making up the image (one, or every slice of a series, sorted by name).
    series_uid: DICOM SeriesInstanceUID ("" otherwise).
    """

    path: Path
    patient_id: str
    kind: str
    files: tuple[Path, ...]
    series_uid: str = ""


def missing(path: Path, expected: str) -> str:
    """Message for a path that does not exist: 'no such file' when its name is an image file's
    (a suffix we read), else 'no such folder', then what was expected."""
    suffix = "".join(path.suffixes[-2:]).lower()
    is_file = path.suffix.lower() in (".dcm", ".npy", ".npz", ".tif", ".tiff", *raster.PIL_SUFFIXES) or suffix.endswith((".nii", ".nii.gz"))
    return f"{path}: no such {'file' if is_file else 'folder'}; expected {expected}"


def _kind_of(path: Path) -> str | None:
    """Format of a file from its name (and DICOM preamble); None if not an image we read."""
    suffix = path.suffix.lower()
    if nifti.is_nifti(path):
        return "nifti"
    if suffix in raster.PIL_SUFFIXES:
        return "raster"
    if suffix in raster.TIFF_SUFFIXES:
        return "tiff"
    if suffix in raster.NUMPY_SUFFIXES:
        return "numpy"
    if dicom.is_dicom_candidate(path):
        return "dicom"
    return None


_KNOWN_SUFFIXES = {*dicom.DICOM_SUFFIXES, *raster.PIL_SUFFIXES, *raster.TIFF_SUFFIXES, *raster.NUMPY_SUFFIXES}


def _file_stem(path: Path) -> str:
    """Default patient id of a file: name without a known image suffix (``a.nii.gz`` -> "a")."""
    if nifti.is_nifti(path):
        return nifti.nifti_stem(path)
    return path.stem if path.suffix.lower() in _KNOWN_SUFFIXES else path.name


def _read_raw(path: Path, kind: str, files: tuple[Path, ...], allow_rgb_to_gray: bool) -> RawImage:
    """The reader of `kind`; when it refuses a file that is empty or plainly another format, say so instead."""
    try:
        return _read_kind(path, kind, files, allow_rgb_to_gray)
    except InputError as e:
        better = mislabelled(path, kind) if path.is_file() else None
        if better is None:
            raise
        raise InputError(better) from e


def _read_kind(path: Path, kind: str, files: tuple[Path, ...], allow_rgb_to_gray: bool) -> RawImage:
    if kind == "dicom_series":
        return dicom.read_dicom_series(files, path, allow_rgb_to_gray=allow_rgb_to_gray)
    if kind == "dicom":
        return dicom.read_dicom_file(path, allow_rgb_to_gray=allow_rgb_to_gray)
    if kind == "nifti":
        return nifti.read_nifti(path)
    if kind == "raster":
        return raster.read_pil(path, allow_rgb_to_gray=allow_rgb_to_gray)
    if kind == "tiff":
        return raster.read_tiff(path, allow_rgb_to_gray=allow_rgb_to_gray)
    if kind == "numpy":
        return raster.read_numpy(path)
    raise AssertionError(kind)


def _series_files(folder: Path) -> tuple[Path, ...]:
    files = tuple(sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                         and p.name.upper() != "DICOMDIR" and dicom.is_dicom_candidate(p)))
    if not files:
        raise InputError(f"{folder}: folder holds no DICOM files; expected a DICOM series folder "
                         f"(use find_images for folders of other formats: {SUPPORTED})")
    return files


def _check_geometry(source: Path, ndim: int, spacing, affine) -> None:
    """Spacing finite and > 0, affine finite and invertible on the image's axes: checked when reading, so a
    bad header fails before any model runs, not when the output is written."""
    sp = np.asarray(spacing, float)
    if sp.size < ndim or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise InputError(f"{source}: voxel spacing {[float(v) for v in sp]} is not {ndim} positive finite numbers; expected "
                         "positive sizes in mm")
    a = np.asarray(affine, float)
    if a.shape != (4, 4) or not np.all(np.isfinite(a)):
        raise InputError(f"{source}: the voxel-to-patient affine {a.tolist()} is not a finite 4x4 matrix; expected finite "
                         "geometry (NIfTI srow/qform, DICOM position/orientation)")
    cols = a[:3, :ndim]
    if np.linalg.matrix_rank(cols, tol=1e-9 * max(1.0, float(np.abs(cols).max()))) < ndim:
        raise InputError(f"{source}: the voxel-to-patient affine {np.round(a, 6).tolist()} is singular (image axes of zero "
                         "length or parallel); expected independent axes")


def _finish(raw: RawImage, source: Path, patient_id: str, max_dims: int) -> Volume:
    """Squeeze singleton axes, check dimensions and finiteness, build the Volume."""
    arr, spacing, affine, meta = raw.array, tuple(raw.spacing), raw.affine, dict(raw.meta)
    while arr.ndim > 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim > 3:
        raise InputError(f"{source}: image has shape {arr.shape} ({arr.ndim}D, e.g. a time series); expected a 2D image or 3D volume")
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr, spacing, affine = arr[0], spacing[-2:], squeeze_first_axis(affine)
    if arr.ndim < 2 or min(arr.shape) < 1:
        raise InputError(f"{source}: image has shape {arr.shape}; expected a 2D image or 3D volume")
    if arr.ndim > max_dims:
        raise InputError(f"{source}: image is {arr.ndim}D with shape {arr.shape}; expected at most {max_dims}D here")
    _check_geometry(source, arr.ndim, spacing, affine)
    finite = np.isfinite(arr)
    if not finite.all():
        n_nan, n_inf = int(np.isnan(arr).sum()), int(np.isinf(arr).sum())
        raise InputError(f"{source}: image contains {n_nan} NaN and {n_inf} infinite values out of {arr.size}; expected finite intensities")
    arr32 = np.ascontiguousarray(arr, dtype=np.float32)
    if arr32.size and float(arr32.min()) == float(arr32.max()):
        meta["constant"] = True
    return Volume(arr32, tuple(float(s) for s in spacing), np.asarray(affine, float), patient_id, source, meta)


def read_volume(path: str | os.PathLike | ImageItem, *, patient_id: str | None = None, max_dims: int = 3,
                allow_rgb_to_gray: bool = False) -> Volume:
    """Read one image/volume file, DICOM series folder, or :class:`ImageItem`.

    path: a file (format from its suffix; DICOM also recognised by its 'DICM' preamble), a
          folder holding exactly one DICOM series, or an item from :func:`find_images`.
    patient_id: overrides the id; else the item's id, else DICOM PatientID, else the file
          stem (``case.nii.gz`` -> "case") or folder name.
    max_dims: 2 or 3; a larger image raises InputError. Leading singleton axes are squeezed
          (``[1, Z, Y, X]`` -> 3D, ``[1, Y, X]`` -> 2D).
    allow_rgb_to_gray: convert true colour to gray (BT.601 luma) instead of raising.

    Returns a Volume with float32 ``[Z, Y, X]`` or ``[Y, X]`` in original units (DICOM:
    modality LUT applied, MONOCHROME1 inverted), spacing in mm, RAS+ affine. A constant image
    is returned with ``meta["constant"] = True`` (see :func:`check_not_constant`).
    """
    if isinstance(path, ImageItem):
        item = path
        raw = _read_raw(item.path, item.kind, item.files, allow_rgb_to_gray)
        return _finish(raw, item.path, patient_id or item.patient_id, max_dims)
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder; expected an image file or DICOM series folder")
    if path.is_dir():
        files = _series_files(path)
        kind = "dicom_series" if len(files) > 1 else "dicom"
        raw = _read_raw(files[0] if kind == "dicom" else path, kind, files, allow_rgb_to_gray)
        default_id = path.name
    else:
        kind = _kind_of(path)
        if kind is None:
            raise InputError(f"{path}: unknown image format (suffix '{path.suffix}'); expected one of {SUPPORTED}")
        raw = _read_raw(path, kind, (path,), allow_rgb_to_gray)
        default_id = _file_stem(path)
    return _finish(raw, path, patient_id or raw.file_patient_id or default_id, max_dims)


def check_not_constant(volume: Volume) -> None:
    """Raise InputError if every voxel has the same value (nothing to normalise or learn)."""
    arr = np.asarray(volume.array)
    if arr.size == 0 or float(arr.min()) == float(arr.max()):
        value = float(arr.flat[0]) if arr.size else float("nan")
        raise InputError(f"{volume.source}: image is constant (every value = {value:g}); expected varying intensities")


def _walk(folder: Path) -> list[Path]:
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out += [Path(root) / f for f in sorted(files) if not f.startswith(".") and f.upper() != "DICOMDIR"]
    return out


def _patient_for(path: Path, folder: Path, patient_from: str, file_id: str) -> str:
    if patient_from == "subfolder":
        rel = path.relative_to(folder).parts
        if len(rel) > 1:
            return rel[0]
    return file_id


def find_images(folder: str | os.PathLike, *, patient_from: Literal["subfolder", "file"] = "subfolder") -> list[ImageItem]:
    """Every readable image under `folder` (recursive; hidden files/folders skipped).

    DICOM: single-frame files with ImagePositionPatient in one folder sharing a
    SeriesInstanceUID form one "dicom_series" item (path = that folder); multi-frame files and
    projection images (CR, DX, MG, US, ... or files without position) and Siemens mosaics (each
    a whole volume) are one item each.
    Other files are one item each; files of unknown formats are skipped (a DICOM file is
    recognised by suffix or by its 'DICM' preamble, so files without extension count).
    A DICOM file whose header cannot be read is still listed (read_volume will then raise).

    patient_from: "subfolder" -> the name of the first-level subfolder of `folder` holding
    the image (images directly in `folder` fall back to "file"); "file" -> DICOM PatientID,
    else the file stem (series: the folder name).
    Returns items sorted by (patient_id, path). Raises InputError if `folder` does not exist,
    is not a folder, or holds no readable image.
    """
    folder = Path(folder)
    if patient_from not in ("subfolder", "file"):
        raise InputError(f"patient_from={patient_from!r}; expected 'subfolder' or 'file'")
    if not folder.exists():
        raise InputError(missing(folder, "a folder of images"))
    if not folder.is_dir():
        raise InputError(f"{folder}: is a file; expected a folder of images (use read_volume for one file)")
    items: list[ImageItem] = []
    groups: dict[tuple[Path, str], list[tuple[Path, str]]] = defaultdict(list)
    for path in _walk(folder):
        kind = _kind_of(path)
        if kind is None:
            continue
        if kind != "dicom":
            items.append(ImageItem(path, _patient_for(path, folder, patient_from, _file_stem(path)), kind, (path,)))
            continue
        try:
            ds = dicom.read_dataset(path, pixels=False)
        except InputError:
            items.append(ImageItem(path, _patient_for(path, folder, patient_from, _file_stem(path)), "dicom", (path,)))
            continue
        pid = str(ds.get("PatientID", "") or "").strip() or _file_stem(path)
        uid = str(ds.get("SeriesInstanceUID", "") or "")
        stackable = (int(ds.get("NumberOfFrames", 1) or 1) == 1 and uid and "ImagePositionPatient" in ds
                     and str(ds.get("Modality", "")) not in dicom.PROJECTION_MODALITIES and not mosaic.is_mosaic(ds))
        if stackable:
            groups[(path.parent, uid)].append((path, pid))
        else:
            items.append(ImageItem(path, _patient_for(path, folder, patient_from, pid), "dicom", (path,), uid))
    for (parent, uid), members in groups.items():
        files = tuple(sorted(p for p, _ in members))
        if len(files) == 1:
            p, pid = members[0]
            items.append(ImageItem(p, _patient_for(p, folder, patient_from, pid), "dicom", files, uid))
            continue
        pid = members[0][1] if members[0][1] != _file_stem(members[0][0]) else parent.name
        items.append(ImageItem(parent, _patient_for(files[0], folder, patient_from, pid), "dicom_series", files, uid))
    if not items:
        raise InputError(f"{folder}: no readable image found; expected files of: {SUPPORTED}")
    return sorted(items, key=lambda it: (it.patient_id, str(it.path), it.series_uid))


