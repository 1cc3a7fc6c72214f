"""Checks of a DICOM file's Image Pixel attributes (PS3.3 C.7.6.3) and of its pixel data length, before decoding.

A decoder's own error ("Bits Allocated value of '12' is invalid", "'<' not supported between 'int' and 'str'",
"The number of bytes of pixel data is less than expected") names neither meddiff's attribute keywords nor, for a
truncated file, that the file was cut short; these checks say which attribute holds what and what was expected,
and for a cut file how many bytes of pixel data were expected and how many are present.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from meddiff.errors import InputError

# PS3.3 C.7.6.3.1.2 defined terms (with the retired ones a reader may still meet)
PHOTOMETRIC = {"MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "HSV", "ARGB", "CMYK", "YBR_FULL", "YBR_FULL_422",
               "YBR_PARTIAL_422", "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT", "XYB"}
UNDEFINED_LENGTH = 0xFFFFFFFF
CUT_ATTR = "_meddiff_cut"  # set on a dataset read from a file that ends inside an element: (element, declared, present)


def note_truncation(ds: Dataset, path: Path, *, pixels: bool) -> None:
    """Record on `ds` whether its file ends inside its last element (pydicom stops there silently, so a file cut
    before its pixel data reads as one without pixel data). Leaves nothing when it cannot tell (deflated syntax)."""
    keys = list(ds.keys())
    if not keys:
        return
    raw = ds.get_item(keys[-1])
    if not isinstance(raw, RawDataElement) or raw.length == UNDEFINED_LENGTH or raw.value_tell is None:
        return
    present = 0 if raw.value is None else len(raw.value)
    cut = present < raw.length
    meta = getattr(ds, "file_meta", None)
    ts = str(meta.get("TransferSyntaxUID", "") or "") if meta is not None else ""
    if not cut and pixels and ts != "1.2.840.10008.1.2.1.99":  # bytes after the last whole element: a cut header
        try:
            cut = path.stat().st_size > raw.value_tell + raw.length
        except OSError:
            return
    if cut:
        object.__setattr__(ds, CUT_ATTR, (str(raw.tag), int(raw.length), present))


def _int(ds: Dataset, path: Path, name: str, lo: int, hi: int, expected: str, default: int | None = None) -> int:
    """The integer value of attribute `name`, InputError naming the file, the attribute and its value unless it
    is a single integer in [lo, hi]; `default` when absent (None: absent is an error)."""
    try:
        with warnings.catch_warnings():  # pydicom warns (with its own file path) about a malformed value: refused below
            warnings.simplefilter("ignore")
            value = ds[name].value if name in ds else None
    except Exception as e:  # pydicom converting a malformed value
        raise InputError(f"{path}: {name} cannot be read ({type(e).__name__}: {e}); expected {expected}") from None
    if value in (None, "", b""):
        if default is None:
            raise InputError(f"{path}: {name} is missing; expected {expected}")
        return default
    try:
        number = value if isinstance(value, int) else float(str(value).strip())  # an IS may read '10.0'
        if number != int(number):
            raise ValueError(number)
        number = int(number)
    except (ValueError, OverflowError):
        raise InputError(f"{path}: {name} is {str(value)!r}, not an integer; expected {expected}") from None
    if not lo <= number <= hi:
        raise InputError(f"{path}: {name} is {number}; expected {expected}")
    return number


def check_pixel_module(ds: Dataset, path: Path) -> dict[str, int]:
    """The Image Pixel attributes (rows, columns, samples, bits, frames) after checking each is a valid value."""
    rows = _int(ds, path, "Rows", 1, 65535, "the number of pixel rows, 1 to 65535")
    cols = _int(ds, path, "Columns", 1, 65535, "the number of pixel columns, 1 to 65535")
    alloc = _int(ds, path, "BitsAllocated", 1, 64, "1 or a multiple of 8 up to 64 (bits per pixel sample)")
    if alloc != 1 and alloc % 8:
        raise InputError(f"{path}: BitsAllocated is {alloc}; expected 1 or a multiple of 8 up to 64 (bits per pixel sample)")
    stored = _int(ds, path, "BitsStored", 1, alloc, f"1 to BitsAllocated ({alloc})", default=alloc)
    _int(ds, path, "HighBit", stored - 1, alloc - 1, f"BitsStored - 1 ({stored - 1}) up to BitsAllocated - 1 ({alloc - 1})",
         default=stored - 1)
    _int(ds, path, "PixelRepresentation", 0, 1, "0 (unsigned) or 1 (two's complement)", default=0)
    samples = _int(ds, path, "SamplesPerPixel", 1, 3, "1 (grayscale) or 3 (colour)", default=1)
    if samples == 2:
        raise InputError(f"{path}: SamplesPerPixel is 2; expected 1 (grayscale) or 3 (colour)")
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if photometric and photometric not in PHOTOMETRIC:
        raise InputError(f"{path}: PhotometricInterpretation is {photometric!r}; expected one of {', '.join(sorted(PHOTOMETRIC))}")
    frames = _int(ds, path, "NumberOfFrames", 1, 2**31 - 1, "a positive number of frames", default=1)
    return {"rows": rows, "cols": cols, "samples": samples, "bits": alloc, "frames": frames}


def _declared(px: dict[str, int], photometric: str) -> tuple[int, str]:
    """Bytes of native (uncompressed) pixel data the attributes declare, and how they were counted."""
    values = px["rows"] * px["cols"] * px["samples"] * px["frames"]
    if photometric == "YBR_FULL_422":  # two samples of chroma per two pixels
        values = values * 2 // 3
    size = (values + 7) // 8 if px["bits"] == 1 else values * px["bits"] // 8
    how = (f"Rows {px['rows']} x Columns {px['cols']} x SamplesPerPixel {px['samples']} x BitsAllocated {px['bits']}/8"
           f" x {px['frames']} frame(s)")
    return size, how


def check_pixel_length(ds: Dataset, path: Path, px: dict[str, int], compressed: bool) -> None:
    """InputError naming the file, the pixel bytes its attributes declare and those present, when native pixel data
    are shorter: 'truncated' when the file ends inside them."""
    if compressed or "PixelData" not in ds:
        return
    expected, how = _declared(px, str(ds.get("PhotometricInterpretation", "") or "").strip().upper())
    present = len(ds.PixelData or b"")
    if present >= expected:
        return
    if getattr(ds, CUT_ATTR, None) is not None:
        raise InputError(f"{path}: file is truncated ({_size(path)}): its pixel data hold {present} bytes; expected "
                         f"{expected} bytes ({how}); copy the file again from its source")
    raise InputError(f"{path}: pixel data hold {present} bytes but the image attributes declare {expected}; expected "
                     f"{expected} bytes ({how}): a wrong Rows, Columns, BitsAllocated or NumberOfFrames")


CUT_IN_SEQUENCE = "End of file reached before delimiter"  # pydicom's warning for a file cut inside an undefined length


def truncated_in_sequence(path: Path) -> str:
    return (f"{path}: file is truncated ({_size(path)}): it ends inside an element of undefined length (compressed pixel "
            "data or a sequence) before its delimiter; expected the whole file: copy it again from its source")


def _image_class(ds: Dataset) -> str | None:
    """The name of the dataset's SOP class when it is an image storage class (which must hold pixel data)."""
    meta = getattr(ds, "file_meta", None)
    uid = ds.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta is not None else None)
    name = str(getattr(uid, "name", "") or "")
    return name if name.endswith("Image Storage") else None


def truncated_before_pixels(ds: Dataset, path: Path) -> InputError | None:
    """For a file without pixel data: the error to raise when it is a cut image file (it ends inside an element and
    holds image attributes, or its SOP class is an image's), None when it really has no pixel data."""
    cut = getattr(ds, CUT_ATTR, None)
    if (cut is None or "Rows" not in ds or "Columns" not in ds) and _image_class(ds):
        last = str(list(ds.keys())[-1]) if len(ds) else "its file meta information"
        return InputError(f"{path}: DICOM file has no pixel data although its SOP class is {_image_class(ds)} "
                          f"({_size(path)}, ending after {last}): a truncated file or a header-only copy; expected an "
                          "image with its pixel data (copy it again from its source)")
    if cut is None or "Rows" not in ds or "Columns" not in ds:
        return None
    element, declared, present = cut
    try:
        expected = f"{_declared(check_pixel_module(ds, path), str(ds.get('PhotometricInterpretation', '')).upper())[0]} bytes"
    except InputError:
        expected = "pixel data"
    return InputError(f"{path}: file is truncated ({_size(path)}): it ends inside element {element} ({present} of its "
                      f"{declared} bytes) before the pixel data; expected {expected} of pixel data, 0 present; copy the "
                      "file again from its source")


def _size(path: Path) -> str:
    try:
        return f"{path.stat().st_size} bytes"
    except OSError:
        return "size unknown"
