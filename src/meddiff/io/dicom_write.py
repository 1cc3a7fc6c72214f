"""Write Volumes as derived DICOM images marked as derived/synthetic.

Series-level attributes (IOD, UIDs, patient, acquisition parameters, provenance): see
:mod:`meddiff.io.dicom_header`. Per file:
  Geometry: ImageOrientationPatient and PixelSpacing from the RAS+ affine (converted to LPS;
  PixelSpacing omitted, and said in ImageComments, when the source had none). Each slice's
  ImagePositionPatient is the source slice's own position when the output keeps the source's
  slices (uneven spacing kept), moved in-plane by the shift of the first pixel centre when the
  pixel grid changed (super-resolution: (new - old spacing) / 2 along rows and columns);
  otherwise positions follow the affine. SliceThickness is the source's (else the slice spacing).
  References: SourceImageSequence (the source slice of each output slice) and
  ReferencedSeriesSequence (the source series).
  Window: the source's WindowCenter/Width when the output's values lie in it, else the output's
  0.5-99.5 percentile range.
  Pixels: 16 bit, MONOCHROME2 (MONOCHROME1 when the source was: its values are inverted back). Integer-valued data within int16/uint16 are stored exactly
  (slope 1, intercept 0); otherwise uint16 with one RescaleSlope/Intercept for the whole
  volume, so ``|read - written| <= slope / 2`` (slope = range / 65535). The MR Image IOD has no
  Modality LUT module: there the slope and intercept go into a linear Real World Value Mapping
  item (PS3.3 C.7.6.16.2.11; meddiff's reader applies it) and no Rescale attribute is written.
  A window narrower than 1 is declared VOILUTFunction LINEAR_EXACT (PS3.3 C.11.2.1.2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, SecondaryCaptureImageStorage, generate_uid
from pydicom.valuerep import format_number_as_ds

from meddiff.io.dicom_header import MARKER_DERIVED, MARKER_SYNTHETIC, spacing_known  # noqa: F401 (re-exported)
from meddiff.io.geometry import dicom_plane


def _ds(x: float) -> str:
    x = float(x)
    return format_number_as_ds(0.0 if abs(x) < 1e-12 else x)


def encode_pixels(values: np.ndarray) -> tuple[np.ndarray, float, float]:
    """float array -> (int16 or uint16 stored values, slope, intercept) with value = stored*slope+intercept.

    Slope and intercept are the values as written in the DS strings (so decoding is exact to
    what a reader sees); quantisation error <= slope / 2.
    """
    v = np.asarray(values, np.float64)
    lo, hi = float(v.min()), float(v.max())
    if np.all(v == np.round(v)):
        if lo >= -32768 and hi <= 32767:
            return v.astype(np.int16), 1.0, 0.0
        if lo >= 0 and hi <= 65535:
            return v.astype(np.uint16), 1.0, 0.0
    icpt = float(_ds(lo))
    slope = float(_ds((hi - lo) / 65535.0 * (1 + 1e-9))) if hi > lo else 1.0
    stored = np.clip(np.round((v - icpt) / slope), 0, 65535).astype(np.uint16)
    return stored, slope, icpt


def monochrome1_stored_bits(meta: Mapping[str, Any]) -> int | None:
    """BitsStored of an unscaled (slope 1, intercept 0) unsigned MONOCHROME1 source, from the inversion
    meddiff.io.dicom applied (lo + hi = 2**bits - 1); None for any other source."""
    if float(meta.get("rescale_slope", 1.0)) != 1.0 or float(meta.get("rescale_intercept", 0.0)) != 0.0:
        return None
    total = float(meta.get("inversion_sum", -1)) + 1
    bits = int(round(np.log2(total))) if total > 1 else 0
    return bits if 1 <= bits <= 16 and 2.0**bits == total else None


def _window(array: np.ndarray, meta: Mapping[str, Any]) -> tuple[float, float]:
    """(centre, width): the source's window if the output's values lie in it, else robust percentiles."""
    lo, hi = (float(v) for v in np.percentile(array, [0.5, 99.5]))
    if meta.get("window"):
        centre, width = (float(v) for v in meta["window"])
        if width > 0 and centre - width / 2 <= hi and lo <= centre + width / 2 and (hi - lo) >= 0.1 * width:
            return centre, width
    if hi <= lo:
        lo, hi = float(array.min()), float(array.max())
    return (lo + hi) / 2, max(hi - lo, 1e-6)


def _real_world_item(slope: float, icpt: float, dtype: np.dtype) -> Dataset:
    """One linear Real World Value Mapping item: value = stored * slope + intercept over the stored range."""
    item = Dataset()
    info = np.iinfo(dtype)
    vr = "SS" if info.min < 0 else "US"
    item.add_new(0x00409216, vr, int(info.min))  # RealWorldValueFirstValueMapped
    item.add_new(0x00409211, vr, int(info.max))  # RealWorldValueLastValueMapped
    item.RealWorldValueIntercept = float(icpt)
    item.RealWorldValueSlope = float(slope)
    item.LUTExplanation = "meddiff output intensity"
    item.LUTLabel = "MEDDIFF"
    unit = Dataset()
    unit.CodeValue, unit.CodingSchemeDesignator, unit.CodeMeaning = "1", "UCUM", "no units"
    item.MeasurementUnitsCodeSequence = Sequence([unit])
    return item


def slice_dataset(header: Dataset, stored: np.ndarray, slope: float, icpt: float, *, plane: Mapping[str, Any],
                  position, index: int, thickness: float | None, spacing_between: float | None,
                  window: tuple[float, float], with_spacing: bool, source_item: Dataset | None,
                  series_item: Dataset | None, photometric: str = "MONOCHROME2", bits: int = 16) -> Dataset:
    """One file for the 2D plane `stored` ``[Y, X]`` at slice `index`, position (LPS mm) `position`."""
    ds = Dataset()
    ds.update(header)
    ds.SOPInstanceUID = generate_uid()
    ds.InstanceNumber = index + 1
    if position is not None:
        ds.ImagePositionPatient = [_ds(p) for p in position]
        ds.ImageOrientationPatient = [_ds(c) for c in (*plane["x_dir"], *plane["y_dir"])]
    if with_spacing:
        ds.PixelSpacing = [_ds(plane["dy"]), _ds(plane["dx"])]
    ds.SliceThickness = _ds(thickness) if thickness else ""
    if spacing_between is not None and position is not None:
        ds.SpacingBetweenSlices = _ds(spacing_between)
    if position is not None and (spacing_between is not None or "SpacingBetweenSlices" not in ds):
        ds.SliceLocation = _ds(float(np.dot(position, np.cross(plane["x_dir"], plane["y_dir"]))))
    if source_item is not None:
        ds.SourceImageSequence = Sequence([source_item])
    if series_item is not None:
        ds.ReferencedSeriesSequence = Sequence([series_item])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits, bits - 1
    ds.PixelRepresentation = 1 if stored.dtype == np.int16 else 0
    if ds.SOPClassUID == MRImageStorage:
        if (slope, icpt) != (1.0, 0.0):
            ds.RealWorldValueMappingSequence = Sequence([_real_world_item(slope, icpt, stored.dtype)])
    else:
        ds.RescaleSlope, ds.RescaleIntercept = _ds(slope), _ds(icpt)
    if (position is None or ds.SOPClassUID == SecondaryCaptureImageStorage) and "PatientOrientation" not in ds:
        ds.PatientOrientation = ""  # Type 2C: required when the image has no Image Plane module
    ds.WindowCenter, ds.WindowWidth = _ds(window[0]), _ds(window[1])
    if window[1] < 1:
        ds.VOILUTFunction = "LINEAR_EXACT"
    ds.PixelData = np.ascontiguousarray(stored).astype(stored.dtype.newbyteorder("<")).tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    return ds


def slice_positions(plane: Mapping[str, Any], n: int, meta: Mapping[str, Any]) -> list[np.ndarray]:
    """LPS position of each output slice's first pixel: the source slices' own positions shifted
    in-plane by (output origin - source first position) when the output has the source's slices
    and orientation, else origin + k * step."""
    even = [plane["origin"] + k * plane["step"] for k in range(n)]
    src = [s.get("position") for s in (meta.get("dicom_slices") or [])]
    if len(src) != n or any(p is None for p in src):
        return even
    src = [np.asarray(p, float) for p in src]
    normal = np.cross(plane["x_dir"], plane["y_dir"])
    shift = plane["origin"] - src[0]
    ours = float(np.dot(plane["step"], normal))
    extent = float(np.dot(src[-1] - src[0], normal))  # the source's first-to-last distance, even or uneven slices
    same_stack = abs(float(np.dot(shift, normal))) < 1e-3 and abs(extent - ours * (n - 1)) < max(0.01 * abs(extent), 0.05)
    return [p + shift for p in src] if same_stack else even


def uneven(positions: list, plane: Mapping[str, Any]) -> bool:
    """True when the slice positions along the normal are not evenly spaced (then no SpacingBetweenSlices)."""
    if len(positions) < 3 or any(p is None for p in positions):
        return False
    normal = np.cross(plane["x_dir"], plane["y_dir"])
    gaps = np.diff([float(np.dot(p, normal)) for p in positions])
    return bool(np.max(np.abs(gaps - np.median(gaps))) > 0.01 * abs(float(np.median(gaps))) + 1e-3)


def volume_datasets(array: np.ndarray, affine: np.ndarray, header: Dataset, meta: Mapping[str, Any], *,
                    geometry_known: bool, references: tuple[list[Dataset], Dataset | None] = ([], None)) -> list[Dataset]:
    """Datasets for a 2D ``[Y, X]`` (one) or 3D ``[Z, Y, X]`` (one per slice) array.

    meta: the source's meta (slice positions, thickness, window, spacing source); references:
    from :func:`meddiff.io.dicom_header.references` (used when they match the slice count).
    """
    plane = dicom_plane(affine, array.ndim)
    photometric = "MONOCHROME2"
    if meta.get("monochrome1_inverted") and meta.get("inversion_sum") is not None:
        # a MONOCHROME1 source (e.g. a radiograph) was read inverted (meddiff.io.dicom): invert back,
        # so the output holds the source's own values and photometric interpretation
        array = float(meta["inversion_sum"]) - np.asarray(array, np.float64)
        photometric = "MONOCHROME1"
    stored, slope, icpt = encode_pixels(array)
    bits = 16
    if photometric == "MONOCHROME1" and (native := monochrome1_stored_bits(meta)) is not None:
        # unscaled unsigned source values: stored in its own bit depth, so that the inversion a reader
        # applies (by the stored range) is the source's and a re-read gives the values meddiff wrote
        bits, slope, icpt = native, 1.0, 0.0
        stored = np.clip(np.round(array), 0, 2**native - 1).astype(np.uint16)
    window = _window(array, meta)
    n = 1 if array.ndim == 2 else array.shape[0]
    items, series_item = references
    items = items if len(items) == n else [None] * n
    positions = slice_positions(plane, n, meta) if geometry_known else [None] * n
    normal = np.cross(plane["x_dir"], plane["y_dir"])
    between = None if array.ndim == 2 else (abs(float(np.dot(plane["step"], normal))) or plane["thickness"])
    if between is not None and uneven(positions, plane):
        between = None  # uneven slices (kept at their own positions): there is no one spacing between them
    thickness = meta.get("slice_thickness") or (between if array.ndim == 3 else (plane["thickness"] if geometry_known else None))
    if thickness is None and array.ndim == 3 and geometry_known:
        thickness = float(np.median(np.abs(np.diff([float(np.dot(p, normal)) for p in positions]))))
    planes = [stored] if array.ndim == 2 else list(stored)
    return [slice_dataset(header, planes[k], slope, icpt, plane=plane, position=positions[k], index=k, thickness=thickness,
                          spacing_between=between, window=window, with_spacing=spacing_known(meta),
                          source_item=items[k], series_item=series_item, photometric=photometric, bits=bits)
            for k in range(n)]


def save_dataset(ds: Dataset, path: Path) -> None:
    ds.save_as(path, enforce_file_format=True)
