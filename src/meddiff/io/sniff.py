"""What a file really holds, from its first bytes: for the message when a reader chosen by the file's name fails.

A PNG named ``.dcm`` or an empty ``.npy`` otherwise gets the reader's own error ("no DICOM preamble", "No data left
in file"), which says neither that the name is wrong nor that the file is empty.
"""

from __future__ import annotations

from pathlib import Path

# reader kind -> (what it reads, the suffix to give such a file)
KINDS = {"dicom": "a DICOM file", "nifti": "a NIfTI image", "raster": "a PNG/JPEG/BMP image", "tiff": "a TIFF image",
         "numpy": "a NumPy .npy/.npz file"}
# leading bytes -> (what the file is, the reader kind that reads it, its usual suffix)
MAGIC = (
    (b"\x89PNG\r\n\x1a\n", ("a PNG image", "raster", ".png")),
    (b"\xff\xd8\xff", ("a JPEG image", "raster", ".jpg")),
    (b"II*\x00", ("a TIFF image", "tiff", ".tif")),
    (b"MM\x00*", ("a TIFF image", "tiff", ".tif")),
    (b"\x93NUMPY", ("a NumPy .npy array", "numpy", ".npy")),
    (b"PK\x03\x04", ("a ZIP archive (e.g. a NumPy .npz)", "numpy", ".npz")),
    (b"\x1f\x8b", ("a gzip-compressed file (e.g. a .nii.gz)", "nifti", ".nii.gz")),
)


def identify(head: bytes) -> tuple[str, str, str] | None:
    """(what the file is, reader kind, suffix) from its first 348+ bytes, None when not recognised."""
    if head[128:132] == b"DICM":  # first: a DICOM preamble may itself hold a TIFF header (dual DICOM/TIFF files)
        return "a DICOM file", "dicom", ".dcm"
    for magic, found in MAGIC:
        if head.startswith(magic):
            return found
    if len(head) >= 348 and head[344:348] in (b"n+1\x00", b"ni1\x00") and head[:4] in (b"\x5c\x01\x00\x00", b"\x00\x00\x01\x5c"):
        return "a NIfTI-1 image", "nifti", ".nii"
    return None


def mislabelled(path: Path, kind: str) -> str | None:
    """The message for a file read as `kind` (from its name) that is empty or plainly another format, else None."""
    if kind not in KINDS:
        return None
    what = KINDS[kind]
    try:
        with open(path, "rb") as f:
            head = f.read(352)
    except OSError:
        return None
    if not head:
        return f"{path}: file is empty (0 bytes); expected {what}"
    if kind == "dicom" and len(head) < 132:  # too short to show the DICM mark: a cut file, whatever its preamble holds
        return None
    found = identify(head)
    if found is None or found[1] == kind:
        return None
    return f"{path}: file is {found[0]}, not {what} as its name says; expected {what} (or rename it with the suffix {found[2]})"
