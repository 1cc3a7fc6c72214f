"""Metrics of restored volumes in every plane, and the through-plane (slice-to-slice) error.

Volumes are arrays ``[D0, D1, D2]``; "plane k" is the set of 2D images obtained by fixing the
index along axis k (plane 0 = the slices, planes 1 and 2 = the two reformats).

Through-plane error along axis k (how well the change from one slice to the next matches the truth's):

    e_k(pred) = RMS( diff_k(pred) - diff_k(truth) ),   diff_k(v)[i] = v[i + 1] - v[i] along axis k

Reported relative to a reference (bicubic): e_k(pred) / e_k(reference); below 1 = more coherent.

Dice per plane (plane_dice): the shipped 2D tissue segmenter (meddiff.downstream.Segmenter) applied to
every plane along an axis, turned upright and resampled as its training slices were.
"""

from __future__ import annotations

import numpy as np
import torch

from .image import psnr, ssim


def planes(volume: np.ndarray, axis: int) -> torch.Tensor:
    """The 2D images of `volume` [D0, D1, D2] with the index along `axis` fixed: [N, 1, h, w] float64."""
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(np.asarray(volume, np.float64), axis, 0)))[:, None]


def plane_metrics(pred: np.ndarray, truth: np.ndarray, axis: int, data_range: float) -> tuple[float, float]:
    """(mean PSNR, mean SSIM) over the planes of `pred` against `truth` along `axis`, leaving out
    planes where the truth is constant (empty background at the volume's edge: PSNR would be inf)."""
    p, t = planes(pred, axis), planes(truth, axis)
    keep = t.flatten(1).std(1) > 0
    if not keep.any():
        raise ValueError(f"every plane along axis {axis} of the truth is constant")
    p, t = p[keep], t[keep]
    return float(np.mean(psnr(p, t, data_range))), float(np.mean(ssim(p, t, data_range)))


def through_plane_error(pred: np.ndarray, truth: np.ndarray, axis: int) -> float:
    """RMS of diff(pred) - diff(truth) along `axis` (same units as the volumes)."""
    d = np.diff(np.asarray(pred, np.float64), axis=axis) - np.diff(np.asarray(truth, np.float64), axis=axis)
    return float(np.sqrt(np.mean(d**2)))


# ---------------------------------------------------------------- Dice of a 2D segmenter per plane

_WORLD = {"R": ("x", 1), "L": ("x", -1), "A": ("y", 1), "P": ("y", -1), "S": ("z", 1), "I": ("z", -1)}


def upright(plane: np.ndarray, codes: tuple[str, str]) -> tuple[np.ndarray, bool]:
    """A plane [rows, columns] whose axes point toward `codes` (nibabel.aff2axcodes letters, e.g. ("I", "R")),
    turned upright as meddiff's 2D models saw their training slices (downstream.slices.upright): rows from
    superior down (anterior down for an axial plane), columns toward R (toward A for a sagittal plane).
    Returns (plane, transposed)."""
    (ga, sa), (gb, sb) = _WORLD[codes[0]], _WORLD[codes[1]]
    normal = ({"x", "y", "z"} - {ga, gb}).pop()
    transposed = gb == ("y" if normal == "z" else "z")  # the vertical axis must be the rows
    if transposed:
        plane, sa, sb = plane.T, sb, sa
    if sa > 0:
        plane = plane[::-1]
    if sb < 0:
        plane = plane[:, ::-1]
    return np.ascontiguousarray(plane), transposed


def segmenter_planes(volume: np.ndarray, axis: int, codes: tuple[str, str, str], spacing: tuple[float, float, float],
                     size: int = 128) -> torch.Tensor:
    """The planes of `volume` [D0, D1, D2] (in [-1, 1]) along `axis` as the shipped segmenter takes them
    (downstream.models.INPUT_NOTE): upright, resampled to square pixels of the finer spacing (bilinear),
    padded to square with -1 and resized to size x size (anti-aliased bilinear): [N, 1, size, size] float32."""
    import torch.nn.functional as F

    rest = [a for a in range(3) if a != axis]
    out = []
    for img in np.moveaxis(np.asarray(volume, np.float32), axis, 0):
        img, t = upright(img, (codes[rest[0]], codes[rest[1]]))
        mm = (spacing[rest[1]], spacing[rest[0]]) if t else (spacing[rest[0]], spacing[rest[1]])
        x = torch.from_numpy(img)[None, None]
        fine = min(mm)
        shape = tuple(max(1, round(n * s / fine)) for n, s in zip(img.shape, mm))
        x = F.interpolate(x, size=shape, mode="bilinear", align_corners=False) if shape != img.shape else x
        side = max(shape)
        ph, pw = side - shape[0], side - shape[1]
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=-1.0)
        out.append(F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False))
    return torch.cat(out)


def plane_dice(pred: np.ndarray, truth: np.ndarray, axis: int, segment, codes: tuple[str, str, str],
               spacing: tuple[float, float, float], batch: int = 32) -> float:
    """Mean over the planes along `axis` of the segmenter's mean Dice (grey and white matter) of `pred`
    against its segmentation of `truth` (no manual labels: the truth's segmentation is the reference),
    leaving out planes whose reference holds under 1% tissue. segment: downstream.Segmenter."""
    from ..downstream.metrics import mean_dice

    p, t = segmenter_planes(pred, axis, codes, spacing), segmenter_planes(truth, axis, codes, spacing)
    labels_p = torch.cat([segment(p[i:i + batch]) for i in range(0, len(p), batch)])
    labels_t = torch.cat([segment(t[i:i + batch]) for i in range(0, len(t), batch)])
    keep = (labels_t > 0).flatten(1).float().mean(1) >= 0.01
    if not keep.any():
        return float("nan")
    return float(mean_dice(labels_p[keep], labels_t[keep], segment.n_classes).mean())
