"""What every format reader hands back to :func:`meddiff.io.readers.read_volume`, plus
helpers shared by the format readers (colour handling, library errors as InputError)."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from meddiff.errors import InputError


@contextmanager
def reading(path: Path | str, kind: str) -> Iterator[None]:
    """Turn what a format library raises while reading `path` into an InputError naming the file and
    the `kind` of file expected (e.g. "NIfTI"); an InputError passes unchanged."""
    try:
        yield
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"{path}: file not found; expected a {kind} file") from None
    except Exception as e:  # the libraries raise many types on corrupt input
        raise InputError(f"{path}: cannot read as {kind} ({type(e).__name__}: {e}); the file may be truncated or corrupt") from e


# ITU-R BT.601 luma weights, used only when the caller allows colour -> gray.
_LUMA = np.array([0.299, 0.587, 0.114])


@dataclass
class RawImage:
    """array: ``[..., Z, Y, X]`` or ``[Y, X]`` (leading non-spatial axes allowed, e.g. NIfTI time),
    float; spacing/affine refer to the last ``min(ndim, 3)`` axes; file_patient_id is the id
    stored in the file (DICOM PatientID) or None."""

    array: np.ndarray
    spacing: tuple[float, ...]
    affine: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    file_patient_id: str | None = None


def colour_to_gray(arr: np.ndarray, source: Path, allow_rgb_to_gray: bool, what: str) -> tuple[np.ndarray, dict]:
    """Turn a colour array ``[..., C]`` (C = 3 or 4, RGB(A)) into gray ``[...]``.

    Gray images stored as RGB (all channels equal) are accepted as they are. True colour is
    an InputError unless ``allow_rgb_to_gray`` (then BT.601 luma of the RGB channels).
    """
    if arr.shape[-1] == 2:  # gray + alpha (PIL "LA", TIFF extra sample)
        if not allow_rgb_to_gray:
            raise InputError(f"{source}: {what} is gray with an alpha (transparency) channel, shape {arr.shape}; expected one "
                             "gray channel (add --allow-rgb to use the gray channel and drop the alpha)")
        return arr[..., 0], {"alpha_dropped": True}
    rgb = arr[..., :3]
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
        return rgb[..., 0], {"stored_as_rgb": True}
    if not allow_rgb_to_gray:
        raise InputError(
            f"{source}: {what} is a colour (RGB) image of shape {arr.shape}; expected a grayscale "
            "image (add --allow-rgb to `meddiff sample` or `meddiff prepare`, or allow_rgb_to_gray=True in Python, "
            "to convert it with BT.601 luma weights)"
        )
    gray = rgb.astype(np.float64) @ _LUMA
    return gray, {"converted_from_rgb": True}
