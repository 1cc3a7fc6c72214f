"""The file-name suffixes of the image formats meddiff reads, in one list (longest first where one
ends another: ".nii.gz" before ".nii"), for naming outputs and pairing files by their stem."""

from __future__ import annotations

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".npy", ".npz", ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom")


def image_suffix(name: str) -> str:
    """The image suffix `name` ends with (case-insensitive), or ""."""
    low = name.lower()
    return next((s for s in IMAGE_SUFFIXES if low.endswith(s)), "")


def strip_image_suffix(name: str) -> str:
    """`name` without its image suffix (unchanged if it has none)."""
    return name[: len(name) - len(image_suffix(name))]
