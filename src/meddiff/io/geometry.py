"""Voxel-to-patient affines shared by the readers and writers.

Convention (see :class:`meddiff.io.volume.Volume`): a 4x4 affine maps voxel indices in
array order -- ``(z, y, x)`` for volumes, ``(y, x, 0)`` for 2D images -- to patient
coordinates in mm, RAS+ (+x = patient's Right, +y = Anterior, +z = Superior), as in
NIfTI/nibabel. DICOM stores LPS+; the two differ by a
sign flip of the first two patient axes.
"""

from __future__ import annotations

import numpy as np

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])  # its own inverse


def affine_3d(x_dir, y_dir, origin_lps, dy: float, dx: float, slice_step_lps) -> np.ndarray:
    """RAS+ affine for an array ``[Z, Y, X]`` from DICOM geometry.

    x_dir, y_dir: unit vectors (LPS) along increasing column (x) and row (y) index, i.e.
    ImageOrientationPatient[:3] and [3:]. origin_lps: ImagePositionPatient of slice 0 (mm).
    dy, dx: PixelSpacing[0] (between rows), PixelSpacing[1] (between columns), mm.
    slice_step_lps: vector (mm, LPS) from slice k to slice k+1.
    """
    a = np.eye(4)
    a[:3, 0] = np.asarray(slice_step_lps, float)
    a[:3, 1] = np.asarray(y_dir, float) * dy
    a[:3, 2] = np.asarray(x_dir, float) * dx
    a[:3, 3] = np.asarray(origin_lps, float)
    return LPS_TO_RAS @ a


def affine_2d(x_dir, y_dir, origin_lps, dy: float, dx: float, thickness: float = 1.0) -> np.ndarray:
    """RAS+ affine for a 2D array ``[Y, X]`` (voxel index ``(y, x, 0)``); third column = normal * thickness."""
    x_dir, y_dir = np.asarray(x_dir, float), np.asarray(y_dir, float)
    a = np.eye(4)
    a[:3, 0] = y_dir * dy
    a[:3, 1] = x_dir * dx
    a[:3, 2] = np.cross(x_dir, y_dir) * thickness
    a[:3, 3] = np.asarray(origin_lps, float)
    return LPS_TO_RAS @ a


def default_affine(spacing: tuple[float, ...]) -> np.ndarray:
    """Affine for images without stored geometry: DICOM's default orientation
    (ImageOrientationPatient 1,0,0,0,1,0; origin 0), with the given spacing."""
    if len(spacing) == 3:
        return affine_3d((1, 0, 0), (0, 1, 0), (0, 0, 0), spacing[1], spacing[2], (0, 0, spacing[0]))
    return affine_2d((1, 0, 0), (0, 1, 0), (0, 0, 0), spacing[0], spacing[1])


def squeeze_first_axis(affine: np.ndarray) -> np.ndarray:
    """Affine of a ``[1, Y, X]`` volume re-expressed for the 2D array ``[Y, X]`` (index (y, x, 0))."""
    return np.asarray(affine, float)[:, [1, 2, 0, 3]]


def dicom_plane(affine: np.ndarray, ndim: int) -> dict:
    """Inverse of :func:`affine_3d` / :func:`affine_2d`: DICOM geometry from an RAS+ affine.

    Returns dict with ``x_dir``, ``y_dir`` (unit, LPS), ``dy``, ``dx`` (mm), ``origin`` (LPS mm of
    voxel 0), ``step`` (LPS mm vector between slices; for 2D the third column) and
    ``thickness`` (its length).
    """
    a = LPS_TO_RAS @ np.asarray(affine, float)
    cz, cy, cx = (a[:3, 0], a[:3, 1], a[:3, 2]) if ndim == 3 else (a[:3, 2], a[:3, 0], a[:3, 1])
    dy, dx = float(np.linalg.norm(cy)), float(np.linalg.norm(cx))
    if dy == 0 or dx == 0:
        raise ValueError(f"affine has a zero-length in-plane axis: {affine.tolist()}")
    return {
        "x_dir": cx / dx, "y_dir": cy / dy, "dy": dy, "dx": dx,
        "origin": a[:3, 3].copy(), "step": cz.copy(), "thickness": float(np.linalg.norm(cz)) or 1.0,
    }
