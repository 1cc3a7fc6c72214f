"""Write a :class:`Volume` as NIfTI, DICOM, PNG, TIFF or NumPy, keeping geometry and values and
marking the output.

Every file is written atomically (meddiff.io.atomic: temporary file, fsync, rename); a
multi-file output (DICOM series, PNG slices) is written into a temporary folder that is
renamed into place. Every output gets a provenance sidecar ``<name>.json``
(:mod:`meddiff.io.provenance`); DICOM outputs also carry it in their header (see
:mod:`meddiff.io.dicom_write` and :mod:`meddiff.io.dicom_header` for the attributes written).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal, Mapping

import numpy as np

from meddiff.errors import InputError
from meddiff.io import dicom_header, dicom_write, nifti, phi, raster
from meddiff.io import provenance as _provenance
from meddiff.io.atomic import atomic_dir, atomic_write_with
from meddiff.io.volume import Volume

OutputFormat = Literal["auto", "nifti", "png", "dicom", "tiff", "numpy"]
FORMATS = ("nifti", "png", "dicom", "tiff", "numpy")
# A folder output is only replaced if it holds nothing but files with these suffixes.
_REPLACEABLE = {".dcm", ".png"}
_COUNTS_FORMATS = ("png", "jpg", "bmp", "tiff")  # readers that return stored counts (meta units "counts")


def _format_of(path: Path, fmt: str) -> str:
    if fmt != "auto":
        if fmt not in FORMATS:
            raise InputError(f"format={fmt!r}; expected 'auto' or one of {', '.join(FORMATS)}")
        return fmt
    if nifti.is_nifti(path):
        return "nifti"
    suffix = path.suffix.lower()
    if suffix == ".png":
        return "png"
    if suffix in raster.TIFF_SUFFIXES:
        return "tiff"
    if suffix in raster.NUMPY_SUFFIXES:
        return "numpy"
    if suffix in (".dcm", "") or path.is_dir():
        return "dicom"
    raise InputError(f"{path}: cannot choose an output format from suffix '{suffix}'; expected .nii, .nii.gz, .png, .tif, .tiff, .npy, .npz, .dcm or a folder (DICOM series)")


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


def _true_counts(volume: Volume, bits: int, window) -> np.ndarray:
    """A PNG/TIFF source in stored counts comes back in counts: rounded and clipped to its bit
    depth, not stretched to fill it (unless a `window` is asked for)."""
    arr = volume.array
    if window is None and volume.meta.get("units") == "counts" and volume.meta.get("format") in _COUNTS_FORMATS:
        return np.clip(np.round(arr), 0, 2**bits - 1).astype(np.float32)
    return arr


def _without_paths(record: Mapping[str, Any]) -> dict[str, Any]:
    """Provenance for a de-identified header: no command line or file paths (they may name the patient)."""
    return {k: v for k, v in record.items() if k not in ("command", "source", "checkpoint")}


def _source(volume: Volume, record: Mapping[str, Any], keep: bool) -> str:
    """The sidecar's `source`: the path as read with patient tags kept, else the caller's (relative to
    --input, meddiff.io.phi) or the source's own name (a folder's pseudonymised)."""
    if keep:
        return str(volume.source)
    return str(record.get("source") or phi.public_relpath(volume.source, None))


def _pseudonym(source: Volume, uid_map: dicom_header.UIDMap) -> str | None:
    """The run's pseudonym of the source's patient: its DICOM PatientID, else the patient the reader assigned."""
    pid = str((source.meta.get("dicom_patient") or {}).get("PatientID", "") or source.patient_id or "")
    return uid_map.pseudonym(pid) if pid else None


def _write_dicom(volume: Volume, path: Path, affine: np.ndarray, reference: Volume | None, *, synthetic: bool,
                 keep_patient_tags: bool, description: str, patient_id: str | None, overwrite: bool,
                 record: Mapping[str, Any], uid_map: dicom_header.UIDMap) -> list[Path]:
    source = reference if reference is not None else volume
    meta = {**dict(volume.meta), **dict(source.meta)}
    patient = None
    if keep_patient_tags:
        patient = dict(source.meta.get("dicom_patient") or {"PatientID": source.patient_id})
    header = dicom_header.series_header(
        meta=meta, units=str(volume.meta.get("units", source.meta.get("units", ""))), synthetic=synthetic,
        description=description, patient=patient,
        patient_id=patient_id or _pseudonym(source, uid_map), uid_map=uid_map,
        source_key=str(source.source), provenance=record if keep_patient_tags else _without_paths(record))
    if str(meta.get("burned_in_annotation", "")) == "YES":
        logging.getLogger(__name__).warning(
            "%s: the source declares BurnedInAnnotation YES; the output keeps YES and PatientIdentityRemoved is not "
            "claimed: text burned into the pixels (names, dates) was not removed", path.name)
    refs = dicom_header.references(meta, keep_patient_tags, uid_map)
    datasets = dicom_write.volume_datasets(volume.array, affine, header, meta, geometry_known=dicom_header.geometry_known(meta),
                                           references=refs)
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


def _write_file(volume: Volume, path: Path, fmt: str, affine: np.ndarray, text: str, bits: int, window) -> list[Path]:
    """NIfTI, TIFF or NumPy: one file."""
    if fmt == "nifti":
        atomic_write_with(path, lambda tmp: nifti.write_nifti(volume.array, affine, tmp, text))
    elif fmt == "tiff":
        dtype = str(volume.meta.get("dtype", "float32")) if volume.meta.get("format") == "tiff" else "float32"
        arr = volume.array if window is None else np.clip(volume.array, *window)
        atomic_write_with(path, lambda tmp: raster.write_tiff(arr, tmp, dtype=dtype, description=text))
    else:
        atomic_write_with(path, lambda tmp: raster.write_numpy(volume.array, tmp, spacing=volume.spacing))
    return [path]


def write_volume(volume: Volume, path: str | os.PathLike, *, reference: Volume | None = None, synthetic: bool = True,
                 keep_patient_tags: bool = False, description: str = "meddiff output",
                 format: OutputFormat = "auto", bits: int | None = None, window: tuple[float, float] | None = None,
                 patient_id: str | None = None, overwrite: bool = False,
                 provenance: Mapping[str, Any] | None = None, uid_map: dicom_header.UIDMap | None = None) -> list[Path]:
    """Write `volume` and return the image files written (final paths), plus a provenance
    sidecar ``<name>.json`` beside them (not in the returned list).

    Format from `format`, or with "auto" from the suffix: ``.nii``/``.nii.gz`` -> NIfTI
    (float32, affine kept); ``.png`` -> PNG (`bits` 8 or 16, default the source PNG's depth or 16;
    `window` (lo, hi) mapped to 0..2**bits-1, default: a PNG/TIFF source in counts comes back in
    its own counts (rounded, clipped, not stretched), integers already inside 0..2**bits-1 are
    stored unchanged, anything else maps its min..max (recorded in the ``meddiff_window`` text
    chunk); a 3D volume becomes a folder ``<stem>/<stem>_0000.png`` ...); ``.tif``/``.tiff`` ->
    TIFF (a TIFF source's integer type, values rounded and clipped to it; else float32; 3D ->
    pages); ``.npy`` -> float32 array, ``.npz`` -> ``image`` + ``spacing``; ``.dcm`` or no suffix
    -> DICOM (2D + ``.dcm`` -> one file; 3D -> a series folder ``IM_0001.dcm`` ..., named after
    `path` without ``.dcm``; see :mod:`meddiff.io.dicom_write`).
    reference: geometry (affine) and DICOM modality/patient tags/UIDs come from it (same shape
    required); default: the volume itself (its meta: the source's, for a derived volume).
    synthetic: DICOM/NIfTI marker says "Generated ... synthetic" (else "Derived ... processed").
    keep_patient_tags: copy PatientName/ID/BirthDate/Sex from the reference's DICOM tags and keep
    its study/frame-of-reference UIDs; otherwise no patient attribute is copied, PatientID =
    `patient_id` or "meddiff", and source UIDs are replaced through `uid_map` (default: one map
    per process, so one run's outputs stay coherent).
    provenance: what made the output (checkpoint_sha256, sampler, steps, seed, precision, ...);
    meddiff_version, command and time are added (:func:`meddiff.io.provenance.complete`). All of it
    goes to the sidecar; a de-identified DICOM header gets it without the command line and paths.
    overwrite: allow replacing an existing output folder (single files are always replaced
    atomically).
    """
    path = Path(path)
    fmt = _format_of(path, format)
    affine = _geometry(volume, reference)
    marker = dicom_write.MARKER_SYNTHETIC if synthetic else dicom_write.MARKER_DERIVED
    if not np.isfinite(volume.array).all():
        raise InputError(f"volume from {volume.source} contains NaN/inf values; expected finite values to write to {path}")
    record = _provenance.complete(provenance, keep_paths=keep_patient_tags)
    text = f"{marker}: {description}"
    if fmt == "png":
        own = volume.meta.get("format") in ("png", "jpg", "bmp") and volume.meta.get("bits") in (8, 16)
        png_bits = bits or (int(volume.meta["bits"]) if own else 16)
        counted = volume.with_array(_true_counts(volume, png_bits, window))
        written = _write_png(counted, path, png_bits, window, text, overwrite)
    elif fmt == "dicom":
        written = _write_dicom(volume, path, affine, reference, synthetic=synthetic, keep_patient_tags=keep_patient_tags,
                               description=description, patient_id=patient_id, overwrite=overwrite, record=record,
                               uid_map=uid_map or dicom_header.RUN_UIDS)
    else:
        nifti_text = f"meddiff {'synthetic' if synthetic else 'derived'}: {description}"
        written = _write_file(volume, path, fmt, affine, nifti_text if fmt == "nifti" else text, bits or 16, window)
    output = written[0] if len(written) == 1 and written[0] == path else (written[0].parent if len(written) else path)
    _provenance.write_sidecar(output, {**record, "source": _source(volume, record, keep_patient_tags), "format": fmt, "synthetic": synthetic,
                                       "description": description, "marker": marker,
                                       "files": [str(p.name) for p in written], "value_units": str(volume.meta.get("units", ""))})
    return written
