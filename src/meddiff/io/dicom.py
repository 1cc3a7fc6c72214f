"""DICOM reading: single images (2D), multi-frame files (3D) and series folders (3D).

Intensities: the modality LUT (RescaleSlope/RescaleIntercept, or a Modality LUT Sequence)
is applied, so CT comes back in Hounsfield units. MONOCHROME1 images (higher stored value =
darker) are inverted after rescaling so that higher = brighter for every image:
``value = meta["inversion_sum"] - rescaled``, with ``inversion_sum`` = the sum of the
rescaled ends of the stored-value range; ``meta["monochrome1_inverted"] = True``.
Geometry: see :mod:`meddiff.io.geometry` (RAS+ affine, array order ``[Z, Y, X]``).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from meddiff.errors import InputError
from meddiff.io import mosaic
from meddiff.io._raw import RawImage, colour_to_gray, reading
from meddiff.io.dicom_pixels import (CUT_IN_SEQUENCE, check_pixel_length, check_pixel_module, note_truncation,
                                     truncated_before_pixels, truncated_in_sequence)
from meddiff.io.geometry import affine_2d, affine_3d, default_affine

DICOM_SUFFIXES = {".dcm", ".dicom", ".ima", ".dc3"}
PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# objects with pixel data that are not images: Modality -> SOP Class UID
NOT_IMAGES = {"SEG": "1.2.840.10008.5.1.4.1.1.66.4"}
NOT_IMAGE_NAMES = {"SEG": "segmentation"}
PATIENT_TAGS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex")
# Acquisition attributes a derived image keeps (PS3.3 C.8.3.1 MR Image, C.8.2.1 CT Image, C.7.3.1 General Series).
ACQUISITION_TAGS = (
    "BodyPartExamined", "PatientPosition", "ScanningSequence", "SequenceVariant", "ScanOptions", "MRAcquisitionType",
    "SequenceName", "RepetitionTime", "EchoTime", "InversionTime", "FlipAngle", "EchoTrainLength", "EchoNumbers",
    "NumberOfAverages", "ImagingFrequency", "ImagedNucleus", "MagneticFieldStrength", "PixelBandwidth",
    "KVP", "XRayTubeCurrent", "Exposure", "ExposureTime", "ConvolutionKernel", "FilterType", "ReconstructionDiameter",
    "GantryDetectorTilt", "SpiralPitchFactor", "ContrastBolusAgent", "Laterality", "PositionReferenceIndicator",
)
# Projection / photo modalities: images of one series are separate 2D images, not slices.
PROJECTION_MODALITIES = {"CR", "DX", "MG", "IO", "PX", "RG", "XA", "RF", "US", "ES", "XC", "OP", "SM", "OT", "SC"}


def has_dicom_preamble(path: Path) -> bool:
    """True if bytes 128..131 of the file are b'DICM' (Part 10 file)."""
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def is_dicom_candidate(path: Path) -> bool:
    """A DICOM suffix, or any file with the Part 10 preamble (e.g. no extension, UID names)."""
    return path.suffix.lower() in DICOM_SUFFIXES or has_dicom_preamble(path)


def read_dataset(path: Path, *, pixels: bool = True) -> Dataset:
    """dcmread with errors turned into InputError naming the file."""
    with reading(path, "DICOM"):
        with warnings.catch_warnings(record=True) as caught, _quiet_pydicom():
            warnings.simplefilter("always")
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=not pixels)
            except InvalidDicomError:
                ds = pydicom.dcmread(path, stop_before_pixels=not pixels, force=True)
                if "Rows" not in ds and not any(t in ds for t in PIXEL_TAGS) and "SOPClassUID" not in ds:
                    raise InvalidDicomError("no DICOM preamble and no image attributes")
        if any(CUT_IN_SEQUENCE in str(w.message) for w in caught):  # pydicom then returns what it read, or nothing
            raise InputError(truncated_in_sequence(Path(path)))
        note_truncation(ds, Path(path), pixels=pixels)
        return ds


def _where(ds: Dataset) -> str:
    return str(getattr(ds, "filename", "") or "DICOM dataset")


def _numbers(ds: Dataset, name: str, raw, count: int | None = None, *, expected: str = "") -> list[float]:
    """The decimal values of attribute `name` (raw: its value) as finite floats; InputError naming the file,
    the attribute and its text when they are not numbers, not finite, or not `count` of them."""
    values = list(raw) if isinstance(raw, (list, tuple, pydicom.multival.MultiValue)) else [raw]
    text = "\\".join(str(v) for v in values)
    what = expected or (f"{count} decimal number(s)" if count else "a decimal number")
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError):
        raise InputError(f"{_where(ds)}: {name} is {text!r}, not numeric; expected {what}") from None
    if count is not None and len(out) != count:
        raise InputError(f"{_where(ds)}: {name} has {len(out)} value(s) ({text!r}); expected {what}")
    if not all(np.isfinite(out)):
        raise InputError(f"{_where(ds)}: {name} is {text!r}, not finite; expected {what}")
    return out


def _raw(ds: Dataset, name: str):
    """ds[name].value, None when absent or empty; a value pydicom cannot convert is an InputError naming it."""
    try:
        if name not in ds:
            return None
        value = ds[name].value
    except Exception as e:  # pydicom converting a malformed value
        raise InputError(f"{_where(ds)}: {name} cannot be read ({type(e).__name__}: {e}); expected a valid value") from None
    return None if value in (None, "") else value


def _fg_item(ds: Dataset, frame: int | None, seq: str) -> Dataset | None:
    """Item of functional-group sequence `seq` for `frame` (per-frame first, then shared)."""
    if frame is not None and "PerFrameFunctionalGroupsSequence" in ds:
        groups = ds.PerFrameFunctionalGroupsSequence
        if frame < len(groups) and seq in groups[frame] and len(groups[frame][seq].value):
            return groups[frame][seq].value[0]
    if "SharedFunctionalGroupsSequence" in ds and len(ds.SharedFunctionalGroupsSequence):
        shared = ds.SharedFunctionalGroupsSequence[0]
        if seq in shared and len(shared[seq].value):
            return shared[seq].value[0]
    return None


def _attr(ds: Dataset, frame: int | None, seq: str, name: str):
    """Attribute `name` from the top level, else from functional group `seq`."""
    value = _raw(ds, name)
    if value is not None:
        return value
    item = _fg_item(ds, frame, seq)
    if item is not None:
        value = _raw(item, name)
    return value


def _real_world_map(ds: Dataset) -> tuple[float, float] | None:
    """(slope, intercept) of a linear Real World Value Mapping item (how meddiff writes the values of an
    MR image, whose IOD has no Modality LUT), None when there is none."""
    for item in ds.get("RealWorldValueMappingSequence") or []:
        slope, icpt = item.get("RealWorldValueSlope"), item.get("RealWorldValueIntercept")
        if slope is not None and icpt is not None and "RealWorldValueLUTData" not in item:
            return float(slope), float(icpt)
    return None


def _rescale(ds: Dataset, frame: int | None) -> tuple[float, float]:
    slope = _attr(ds, frame, "PixelValueTransformationSequence", "RescaleSlope")
    icpt = _attr(ds, frame, "PixelValueTransformationSequence", "RescaleIntercept")
    if slope is None and icpt is None and str(ds.get("Modality", "")) == "MR":
        rwv = _real_world_map(ds)
        if rwv is not None:
            return rwv
    slope = _numbers(ds, "RescaleSlope", slope, 1)[0] if slope is not None else 1.0
    icpt = _numbers(ds, "RescaleIntercept", icpt, 1)[0] if icpt is not None else 0.0
    if slope == 0:
        raise InputError(f"{_where(ds)}: RescaleSlope is 0 (every pixel would have the same value); expected a non-zero number")
    return slope, icpt


def _stored_range(ds: Dataset) -> tuple[int, int]:
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)))
    if int(ds.get("PixelRepresentation", 0)) == 1:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def _frame_values(ds: Dataset, raw: np.ndarray, frame: int | None, meta: dict) -> np.ndarray:
    """Modality LUT then MONOCHROME1 inversion for one frame (or a single-frame image)."""
    if ds.get("ModalityLUTSequence"):
        out = apply_modality_lut(raw, ds).astype(np.float64)
        lo, hi = float(out.min()), float(out.max())
        meta["modality_lut"] = True
    else:
        slope, icpt = _rescale(ds, frame)
        out = raw.astype(np.float64) * slope + icpt
        smin, smax = _stored_range(ds)
        lo, hi = smin * slope + icpt, smax * slope + icpt
        meta.setdefault("rescale_slope", slope)
        meta.setdefault("rescale_intercept", icpt)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        meta["monochrome1_inverted"] = True
        meta["inversion_sum"] = lo + hi
        out = (lo + hi) - out
    return out


def _ensure_transfer_syntax(ds: Dataset) -> None:
    """Files without file meta (no preamble) lack TransferSyntaxUID; infer it from how they were read."""
    meta = ds.file_meta if hasattr(ds, "file_meta") else None
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    implicit, little = ds.original_encoding
    uid = ImplicitVRLittleEndian if implicit else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    if meta is None:
        ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid


@contextlib.contextmanager
def _quiet_pydicom():
    """pydicom logs a decoder's traceback before raising; the raised error is reported instead."""
    logger = logging.getLogger("pydicom")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def _pixels(ds: Dataset, path: Path, allow_rgb_to_gray: bool, meta: dict) -> np.ndarray:
    """Decoded, rescaled pixels: ``[F, Y, X]`` for multi-frame, ``[Y, X]`` otherwise (float64)."""
    modality = str(ds.get("Modality", "") or "")
    meta_sop = ds.file_meta.get("MediaStorageSOPClassUID") if hasattr(ds, "file_meta") else None
    sop = ds.get("SOPClassUID") or meta_sop or "unknown SOP class"
    kind = ", ".join(x for x in (modality, str(getattr(sop, "name", sop))) if x)
    if not any(t in ds for t in PIXEL_TAGS):
        raise truncated_before_pixels(ds, path) or InputError(f"{path}: DICOM file has no pixel data ({kind}); expected an image")
    if modality in NOT_IMAGES or str(sop) in NOT_IMAGES.values():
        raise InputError(f"{path}: DICOM file is a {NOT_IMAGE_NAMES.get(modality, modality)} ({kind}), a label map rather "
                         "than an image to restore; expected an image (CT, MR, CR, ...)")
    _ensure_transfer_syntax(ds)
    ts = ds.file_meta.get("TransferSyntaxUID")
    check_pixel_length(ds, path, check_pixel_module(ds, path), ts is not None and ts.is_compressed)
    try:
        with _quiet_pydicom():
            raw = ds.pixel_array
    except Exception as e:
        ts = ds.file_meta.get("TransferSyntaxUID")
        reason = " ".join(str(e).split())
        hint = (f"its pixel data are corrupt or not encoded as its transfer syntax {ts.name} ({ts}) declares"
                if ts is not None and ts.is_compressed else "the file may be truncated or corrupt")
        raise InputError(f"{path}: cannot decode DICOM pixel data; {hint} (decoder: {type(e).__name__}: {reason})") from e
    nframes = int(ds.get("NumberOfFrames", 1) or 1)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "PALETTE COLOR":
        try:
            raw = apply_color_lut(raw, ds)
        except Exception as e:
            raise InputError(f"{path}: cannot apply the DICOM palette ({type(e).__name__}: {e}); expected a valid PALETTE COLOR image") from e
    if raw.ndim == (3 if nframes > 1 else 2) + 1 and raw.shape[-1] in (3, 4):
        gray, note = colour_to_gray(raw, path, allow_rgb_to_gray, f"DICOM ({ds.get('PhotometricInterpretation')})")
        meta.update(note)
        return gray.astype(np.float64)
    if nframes > 1:
        return np.stack([_frame_values(ds, raw[i], i, meta) for i in range(nframes)])
    return _frame_values(ds, raw, None, meta)


def _spacing_2d(ds: Dataset, frame: int | None, meta: dict) -> tuple[float, float]:
    for name in ("PixelSpacing", "ImagerPixelSpacing"):
        v = _attr(ds, frame, "PixelMeasuresSequence", name)
        if v is None:
            continue
        v = _numbers(ds, name, v, 2, expected="2 finite numbers (row\\column spacing in mm)")
        if any(s < 0 for s in v):
            raise InputError(f"{_where(ds)}: {name} is {v[0]:g}\\{v[1]:g}, a negative pixel size; expected 2 positive numbers "
                             "(row\\column spacing in mm)")
        if all(s > 0 for s in v):
            meta["spacing_source"] = name
            return v[0], v[1]
    meta["spacing_source"] = "none (1 mm assumed)"
    return 1.0, 1.0


def _orientation(ds: Dataset, frame: int | None) -> np.ndarray | None:
    """ImageOrientationPatient: two unit direction cosines at right angles, else InputError (a zero, parallel or
    unnormalised pair would give a wrong or singular geometry, found only when writing)."""
    v = _attr(ds, frame, "PlaneOrientationSequence", "ImageOrientationPatient")
    if v is None:
        return None
    o = np.asarray(_numbers(ds, "ImageOrientationPatient", v, 6, expected="6 direction cosines (row\\column)"))
    norms = np.linalg.norm(o[:3]), np.linalg.norm(o[3:])
    if max(abs(n - 1) for n in norms) > 0.01 or abs(float(o[:3] @ o[3:])) > 0.01:
        raise InputError(f"{_where(ds)}: ImageOrientationPatient {[float(x) for x in o]} is not two unit vectors at right "
                         "angles (lengths {:.3g}, {:.3g}; dot {:.3g}); expected orthonormal row and column cosines".format(
                             *norms, float(o[:3] @ o[3:])))
    return o


def _position(ds: Dataset, frame: int | None) -> np.ndarray | None:
    v = _attr(ds, frame, "PlanePositionSequence", "ImagePositionPatient")
    return None if v is None else np.asarray(_numbers(ds, "ImagePositionPatient", v, 3, expected="3 finite numbers (x\\y\\z in mm)"))


def _base_meta(ds: Dataset, source: Path) -> dict[str, Any]:
    modality = str(ds.get("Modality", "") or "")
    rtype = str(ds.get("RescaleType", "") or "")
    units = rtype if rtype and rtype != "US" else ("HU" if modality == "CT" else "arbitrary")
    meta: dict[str, Any] = {
        "format": "dicom", "modality": modality, "units": units,
        "photometric": str(ds.get("PhotometricInterpretation", "")),
        "bits": int(ds.get("BitsStored", 0) or 0),
        "series_uid": str(ds.get("SeriesInstanceUID", "")),
        "study_uid": str(ds.get("StudyInstanceUID", "")),
        "dicom_patient": {t: str(ds.get(t, "") or "") for t in PATIENT_TAGS},
        "sop_class": str(ds.get("SOPClassUID", "") or ""),
        "frame_of_reference": str(ds.get("FrameOfReferenceUID", "") or ""),
        "acquisition": {t: ds[t].value for t in ACQUISITION_TAGS if t in ds and ds[t].value not in (None, "")},
        "image_type": [str(v) for v in (ds.get("ImageType") or [])] if not isinstance(ds.get("ImageType"), str)
        else [str(ds.ImageType)],
        "burned_in_annotation": str(ds.get("BurnedInAnnotation", "") or "").strip().upper(),
    }
    thick = _raw(ds, "SliceThickness")
    if thick is not None and _numbers(ds, "SliceThickness", thick, 1)[0] > 0:
        meta["slice_thickness"] = float(thick)
    wc, ww = _raw(ds, "WindowCenter"), _raw(ds, "WindowWidth")
    if wc is not None and ww is not None:
        meta["window"] = (_numbers(ds, "WindowCenter", wc)[0], _numbers(ds, "WindowWidth", ww)[0])
        if meta["window"][1] <= 0:
            raise InputError(f"{_where(ds)}: WindowWidth is {meta['window'][1]:g}; expected a positive window width")
    return meta


def _patient_id(ds: Dataset) -> str | None:
    pid = str(ds.get("PatientID", "") or "").strip()
    return pid or None


@dataclass
class _Slice:
    """One 2D plane of a stack: values [Y, X], its position (LPS) and a fallback order key."""

    values: np.ndarray
    position: np.ndarray | None
    order: float
    name: str
    ref: tuple[str, int | None] = ("", None)  # (SOPInstanceUID, frame number from 1 or None)


def _stack(slices: list[_Slice], orient: np.ndarray | None, dy: float, dx: float,
           fallback_dz: float, source: Path, meta: dict) -> tuple[np.ndarray, tuple, np.ndarray]:
    """Sort planes along the slice normal (fallback: order key) and build array/spacing/affine."""
    shapes = {s.values.shape for s in slices}
    if len(shapes) > 1:
        examples = {}
        for s in slices:
            examples.setdefault(s.values.shape, s.name)
        detail = ", ".join(f"{shp[0]}x{shp[1]} (e.g. {n})" for shp, n in examples.items())
        raise InputError(f"{source}: DICOM series mixes image sizes {detail}; expected all slices the same size")
    geometric = orient is not None and all(s.position is not None for s in slices)
    if geometric:
        x_dir, y_dir = orient[:3], orient[3:]
        normal = np.cross(x_dir, y_dir)
        keys = np.array([float(s.position @ normal) for s in slices])
    else:
        keys = np.array([s.order for s in slices])
    idx = np.argsort(keys, kind="stable")
    slices, keys = [slices[i] for i in idx], keys[idx]
    meta["dicom_slices"] = [{"sop_uid": s.ref[0], "frame": s.ref[1],
                             "position": None if s.position is None else [float(v) for v in s.position]} for s in slices]
    array = np.stack([s.values for s in slices])
    n = len(slices)
    if not geometric:
        meta["slice_order"] = "InstanceNumber"
        spacing = (fallback_dz, dy, dx)
        return array, spacing, default_affine(spacing)
    meta["slice_order"] = "ImagePositionPatient"
    if n == 1:
        dz = fallback_dz
        step = normal * dz
    else:
        diffs = np.diff(keys)
        if np.any(np.abs(diffs) < 1e-4):
            k = int(np.argmin(np.abs(diffs)))
            raise InputError(
                f"{source}: {slices[k].name} and {slices[k + 1].name} lie at the same slice position "
                f"{keys[k]:.3f} mm; expected one image per position (multi-echo or time series?)"
            )
        dz = float(np.median(diffs))
        if np.max(np.abs(diffs - dz)) > 0.01 * dz + 1e-3:
            meta["irregular_slice_spacing"] = True
            meta["slice_gaps_mm"] = [float(d) for d in diffs]
        step = (slices[-1].position - slices[0].position) / (n - 1)
    affine = affine_3d(x_dir, y_dir, slices[0].position, dy, dx, step)
    return array, (dz, dy, dx), affine


def _fallback_dz(ds: Dataset, frame: int | None) -> float:
    for name in ("SpacingBetweenSlices", "SliceThickness"):
        v = _attr(ds, frame, "PixelMeasuresSequence", name)
        if v is not None and _numbers(ds, name, v, 1)[0] > 0:
            return float(v)
    return 1.0


def read_dicom_file(path: Path, *, allow_rgb_to_gray: bool = False) -> RawImage:
    """One DICOM file: a single-frame image -> 2D ``[Y, X]``; multi-frame -> 3D ``[Z, Y, X]``
    (frames sorted by their per-frame ImagePositionPatient when present)."""
    ds = read_dataset(path)
    meta = _base_meta(ds, path)
    values = _pixels(ds, path, allow_rgb_to_gray, meta)
    dy, dx = _spacing_2d(ds, 0, meta)
    if mosaic.is_mosaic(ds):
        return _read_mosaic(ds, values, path, dy, dx, meta)
    if values.ndim == 2:
        orient, pos = _orientation(ds, None), _position(ds, None)
        meta["geometry"] = "dicom" if orient is not None and pos is not None else "none"
        thick = meta.get("slice_thickness") or 1.0
        meta["dicom_slices"] = [{"sop_uid": str(ds.get("SOPInstanceUID", "")), "frame": None,
                                 "position": None if pos is None else [float(v) for v in pos]}]
        affine = (affine_2d(orient[:3], orient[3:], pos, dy, dx, thick) if meta["geometry"] == "dicom"
                  else default_affine((dy, dx)))
        return RawImage(values, (dy, dx), affine, meta, _patient_id(ds))
    uid = str(ds.get("SOPInstanceUID", ""))
    slices = [_Slice(values[i], _position(ds, i), float(i), f"frame {i}", (uid, i + 1)) for i in range(values.shape[0])]
    orient = _orientation(ds, 0)
    array, spacing, affine = _stack(slices, orient, dy, dx, _fallback_dz(ds, 0), path, meta)
    meta["geometry"] = "dicom" if meta["slice_order"] == "ImagePositionPatient" else "none"
    meta["n_frames"] = values.shape[0]
    return RawImage(array, spacing, affine, meta, _patient_id(ds))


def _read_mosaic(ds: Dataset, values: np.ndarray, path: Path, dy: float, dx: float, meta: dict) -> RawImage:
    """A Siemens mosaic -> ``[n, Y, X]`` slices (see :mod:`meddiff.io.mosaic`)."""
    if values.ndim != 2:
        raise InputError(f"{path}: Siemens mosaic with {values.shape[0]} frames; expected one mosaic frame")
    slices, k = mosaic.unpack(values, ds, path)
    meta["mosaic"] = {"slices": int(slices.shape[0]), "grid": k}
    geo = mosaic.geometry(ds, k, slices.shape[1:], dy, dx)
    if geo is None:
        meta["geometry"], meta["slice_order"] = "none", "mosaic tiles"
        spacing = (_fallback_dz(ds, None), dy, dx)
        return RawImage(slices, spacing, default_affine(spacing), meta, _patient_id(ds))
    x_dir, y_dir, origin, step, dz = geo
    meta["geometry"], meta["slice_order"] = "dicom", "mosaic tiles"
    uid = str(ds.get("SOPInstanceUID", ""))
    meta["dicom_slices"] = [{"sop_uid": uid, "frame": None, "position": [float(v) for v in origin + k * step]}
                            for k in range(slices.shape[0])]
    return RawImage(slices, (dz, dy, dx), affine_3d(x_dir, y_dir, origin, dy, dx, step), meta, _patient_id(ds))


# Attributes every slice of one series must share (else it is not one image: mixed pixel sizes would be
# stacked at the first slice's spacing, mixed modalities or encodings mix different images).
_SERIES_SAME = ("Modality", "Rows", "Columns", "BitsAllocated", "PixelRepresentation", "SamplesPerPixel", "PixelSpacing")


def _check_consistent(datasets: list, source: Path) -> None:
    (f0, ds0), rest = datasets[0], datasets[1:]
    for name in _SERIES_SAME:
        want = _raw(ds0, name)
        for f, ds in rest:
            got = _raw(ds, name)
            if name == "PixelSpacing" and want is not None and got is not None:
                a, b = _numbers(ds0, name, want, 2), _numbers(ds, name, got, 2)
                same = np.allclose(a, b, rtol=1e-3, atol=1e-4)
            else:
                same = str(got).strip() == str(want).strip()
            if not same:
                raise InputError(f"{source}: {f.name} has {name} {got} but {f0.name} has {want}; expected one {name} for every "
                                 "slice of a series (these are different images: read them separately)")


def read_dicom_series(files: Sequence[Path], source: Path, *, allow_rgb_to_gray: bool = False) -> RawImage:
    """A series of single-frame DICOM files -> ``[Z, Y, X]`` sorted by ImagePositionPatient
    projected on the slice normal (fallback InstanceNumber, then file name)."""
    if not files:
        raise InputError(f"{source}: no DICOM files; expected a folder of one DICOM series")
    datasets = [(Path(f), read_dataset(Path(f))) for f in sorted(files)]
    uids = {str(ds.get("SeriesInstanceUID", "")) for _, ds in datasets}
    if len(uids) > 1:
        raise InputError(
            f"{source}: folder holds {len(uids)} DICOM series ({', '.join(sorted(uids))[:300]}); expected one "
            "series (use meddiff.io.find_images to list them separately)"
        )
    mosaics = [f.name for f, ds in datasets if mosaic.is_mosaic(ds)]
    if mosaics and len(datasets) > 1:
        raise InputError(f"{source}: series of {len(datasets)} files holds Siemens mosaics ({', '.join(mosaics[:3])}), each "
                         "a whole volume (e.g. one fMRI/DWI time point); expected one volume: read one mosaic file")
    multi = [f.name for f, ds in datasets if int(ds.get("NumberOfFrames", 1) or 1) > 1]
    if multi and len(datasets) > 1:
        raise InputError(f"{source}: series mixes multi-frame files ({', '.join(multi[:3])}) with others; expected single-frame slices")
    _check_consistent(datasets, source)
    first = datasets[0][1]
    meta = _base_meta(first, source)
    dy, dx = _spacing_2d(first, 0, meta)
    orient = _orientation(first, None)
    slices = []
    for i, (f, ds) in enumerate(datasets):
        for name in ("SliceThickness", "SpacingBetweenSlices"):  # every slice's, not only the first's
            if _raw(ds, name) is not None:
                _numbers(ds, name, _raw(ds, name), 1)
        values = _pixels(ds, f, allow_rgb_to_gray, meta)
        o = _orientation(ds, None)
        if orient is not None and (o is None or np.max(np.abs(o - orient)) > 1e-3):
            raise InputError(f"{source}: {f.name} has orientation {o} but {datasets[0][0].name} has {orient}; expected one orientation per series")
        inst = ds.get("InstanceNumber")
        order = float(inst) if inst not in (None, "") else float(i)
        slices.append(_Slice(values, _position(ds, None), order, f.name, (str(ds.get("SOPInstanceUID", "")), None)))
    array, spacing, affine = _stack(slices, orient, dy, dx, _fallback_dz(first, None), source, meta)
    meta["geometry"] = "dicom" if meta["slice_order"] == "ImagePositionPatient" else "none"
    meta["n_files"] = len(datasets)
    return RawImage(array, spacing, affine, meta, _patient_id(first))
