"""Write a :class:`Volume` as NIfTI, PNG or DICOM, keeping geometry and marking the output.

Every file is written atomically (meddiff.io.atomic: temporary file, fsync, rename); a
multi-file output (DICOM series, PNG slices) is written into a temporary folder that is
renamed into place. See :mod:`meddiff.io.dicom_write` for the DICOM attributes written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np

from meddiff.errors import InputError
from meddiff.io import dicom_write, nifti, raster
from meddiff.io.atomic import atomic_dir, atomic_write_with
from meddiff.io.volume import Volume

OutputFormat = Literal["auto", "nifti", "png", "dicom"]
# A folder output is only replaced if it holds nothing but files with these suffixes.
_REPLACEABLE = {".dcm", ".png"}


def _format_of(path: Path, fmt: str) -> str:
    if fmt != "auto":
        if fmt not in ("nifti", "png", "dicom"):
            raise InputError(f"format={fmt!r}; expected 'auto', 'nifti', 'png' or 'dicom'")
        return fmt
    if nifti.is_nifti(path):
        return "nifti"
    suffix = path.suffix.lower()
    if suffix == ".png":
        return "png"
    if suffix in (".dcm", "") or path.is_dir():
        return "dicom"
    raise InputError(f"{path}: cannot choose an output format from suffix '{suffix}'; expected .nii, .nii.gz, .png, .dcm or a folder (DICOM series)")


def _check_folder_target(folder: Path, overwrite: bool) -> None:
    if not folder.exists():
        return
    if not overwrite:
        raise InputError(f"{folder}: already exists; expected a new output folder (or pass overwrite=True)")
    if not folder.is_dir() or any(p.is_dir() or p.suffix.lower() not in _REPLACEABLE for p in folder.iterdir()):
        raise InputError(f"{folder}: exists and holds files other than .dcm/.png; refusing to replace it")


def _geometry(volume: Volume, reference: Volume | None) -> np.ndarray:
    if reference is None:
        return np.asarray(volume.affine, float)
    if reference.shape != volume.shape:
        raise InputError(
            f"reference {reference.source} has shape {reference.shape} but the volume to write has "
            f"{volume.shape}; expected the same shape (build a Volume with the right affine instead)"
        )
    return np.asarray(reference.affine, float)


def _write_png(volume: Volume, path: Path, bits: int, window, description: str, overwrite: bool) -> list[Path]:
    if bits not in (8, 16):
        raise InputError(f"bits={bits}; expected 8 or 16 for PNG")
    arr = volume.array
    if arr.ndim == 2:
        atomic_write_with(path, lambda tmp: raster.write_png(arr, tmp, bits=bits, window=window, description=description))
        return [path]
    folder = path.with_suffix("") if path.suffix.lower() == ".png" else path
    exact = window is None and np.all(arr == np.round(arr)) and arr.min() >= 0 and arr.max() <= 2**bits - 1
    if window is None and not exact:
        window = (float(arr.min()), float(arr.max()))
    _check_folder_target(folder, overwrite)
    names = [folder / f"{folder.name}_{z:04d}.png" for z in range(arr.shape[0])]
    with atomic_dir(folder, replace=overwrite) as tmp:
        for z, name in enumerate(names):
            raster.write_png(arr[z], tmp / name.name, bits=bits, window=window, description=description)
    return names


def _write_dicom(volume: Volume, path: Path, affine: np.ndarray, reference: Volume | None, *, synthetic: bool,
                 keep_patient_tags: bool, description: str, patient_id: str | None, overwrite: bool) -> list[Path]:
    source = reference if reference is not None else volume
    patient = None
    if keep_patient_tags:
        patient = dict(source.meta.get("dicom_patient") or {"PatientID": source.patient_id})
    header = dicom_write.series_header(
        modality=str(source.meta.get("modality") or volume.meta.get("modality") or "OT"),
        units=str(volume.meta.get("units", source.meta.get("units", ""))), synthetic=synthetic,
        description=description, patient=patient, patient_id=patient_id)
    datasets = dicom_write.volume_datasets(volume.array, affine, header)
    if volume.ndim == 2 and path.suffix.lower() == ".dcm":
        atomic_write_with(path, lambda tmp: dicom_write.save_dataset(datasets[0], tmp))
        return [path]
    folder = path.with_suffix("") if path.suffix.lower() == ".dcm" else path
    _check_folder_target(folder, overwrite)
    names = [folder / f"IM_{k + 1:04d}.dcm" for k in range(len(datasets))]
    with atomic_dir(folder, replace=overwrite) as tmp:
        for ds, name in zip(datasets, names):
            dicom_write.save_dataset(ds, tmp / name.name)
    return names


def write_volume(volume: Volume, path: str | os.PathLike, *, reference: Volume | None = None, synthetic: bool = True,
                 keep_patient_tags: bool = False, description: str = "meddiff output",
                 format: OutputFormat = "auto", bits: int = 16, window: tuple[float, float] | None = None,
                 patient_id: str | None = None, overwrite: bool = False) -> list[Path]:
    """Write `volume` and return the files written (final paths).

    Format from `format`, or with "auto" from the suffix: ``.nii``/``.nii.gz`` -> NIfTI
    (float32, affine kept); ``.png`` -> PNG (`bits` 8 or 16; `window` (lo, hi) mapped to
    0..2**bits-1, default the volume's range, or values stored unchanged when they are integers
    already inside that range; a 3D volume becomes a folder ``<stem>/<stem>_0000.png`` ...);
    ``.dcm`` or no suffix -> DICOM (2D + ``.dcm`` -> one file; 3D -> a series folder
    ``IM_0001.dcm`` ..., named after `path` without ``.dcm``).
    reference: geometry (affine) and DICOM modality/patient tags come from it (same shape
    required); default: the volume itself.
    synthetic: DICOM/NIfTI marker says "Generated ... synthetic" (else "Derived ... processed").
    keep_patient_tags: copy PatientName/ID/BirthDate/Sex from the reference's DICOM tags;
    otherwise no patient attribute is copied and PatientID = `patient_id` or "meddiff".
    overwrite: allow replacing an existing output folder (single files are always replaced
    atomically).
    """
    path = Path(path)
    fmt = _format_of(path, format)
    affine = _geometry(volume, reference)
    marker = dicom_write.MARKER_SYNTHETIC if synthetic else dicom_write.MARKER_DERIVED
    if not np.isfinite(volume.array).all():
        raise InputError(f"volume from {volume.source} contains NaN/inf values; expected finite values to write to {path}")
    if fmt == "nifti":
        atomic_write_with(path, lambda tmp: nifti.write_nifti(volume.array, affine, tmp, f"meddiff {'synthetic' if synthetic else 'derived'}: {description}"))
        return [path]
    if fmt == "png":
        return _write_png(volume, path, bits, window, f"{marker}: {description}", overwrite)
    return _write_dicom(volume, path, affine, reference, synthetic=synthetic, keep_patient_tags=keep_patient_tags,
                        description=description, patient_id=patient_id, overwrite=overwrite)
