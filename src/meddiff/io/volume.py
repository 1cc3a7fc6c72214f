"""The one image type every reader returns and every writer takes."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np


@dataclass(frozen=True)
class Volume:
    """An image or volume in its original intensity units, with its geometry.

    array:   float32, ``[Z, Y, X]`` for volumes or ``[Y, X]`` for 2D images, in the units
             given by ``meta["units"]`` (e.g. "HU" for CT after rescale, "arbitrary" for MRI,
             "counts" for a plain PNG).
    spacing: voxel size in mm, same axis order as ``array``.
    affine:  4x4 matrix mapping voxel indices in ``array`` order (z, y, x) or (y, x, 0) to
             patient coordinates in mm, RAS+ convention (as NIfTI/nibabel). For 2D images the
             third voxel index is 0.
    patient_id: patient or case identifier (from DICOM PatientID, or the file/folder name).
    source:  the file or folder this came from.
    meta:    free metadata: "format" (dicom|nifti|png|tiff|npy), "modality", "units",
             "photometric", "rescale_slope", "rescale_intercept", "bits", "series_uid", ...
    """

    array: np.ndarray
    spacing: tuple[float, ...]
    affine: np.ndarray
    patient_id: str
    source: Path
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.array.ndim not in (2, 3):
            raise ValueError(f"Volume array must be 2D [Y, X] or 3D [Z, Y, X], got shape {self.array.shape} from {self.source}")
        if len(self.spacing) != self.array.ndim:
            raise ValueError(f"spacing {self.spacing} does not match array shape {self.array.shape} from {self.source}")
        if np.asarray(self.affine).shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got {np.asarray(self.affine).shape} from {self.source}")

    @property
    def ndim(self) -> int:
        return self.array.ndim

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    def with_array(self, array: np.ndarray, **meta_updates: Any) -> "Volume":
        """A copy with new pixels of the same shape and geometry (e.g. a model's output)."""
        if array.shape != self.array.shape:
            raise ValueError(f"new array shape {array.shape} differs from {self.array.shape} of {self.source}")
        return replace(self, array=np.asarray(array, dtype=np.float32), meta={**self.meta, **meta_updates})
