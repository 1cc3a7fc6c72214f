"""Inpainting masks as users have them: one file for every input, or a folder with a mask per input
matched by name; binary masks or label maps (NIfTI, DICOM, PNG, NPY, or a DICOM SEG) with one label
chosen; 2D masks of 2D images and 3D masks over volumes; dilation by a physical distance.

    spec = MaskSpec(Path("masks/"), label=2, dilate_mm=3.0)
    holes = mask_for(spec, item, vol, input_root=Path("images/"))   # bool array, vol.shape, True = missing

Matching (``--mask DIR``): an input at ``images/<rel>/<stem>.<ext>`` (a DICOM series: its folder) takes
the mask at ``DIR/<rel>/<stem>[<tag>].<any image ext>``, where <tag> is "" or one of MASK_TAGS
("_mask", "_seg", ...); if there is none there, the mask of the same name anywhere under DIR, if it
is the only one. An input without a mask, or with two candidates, is an error naming both.

Geometry: the mask must have the image's shape. When both carry patient geometry (NIfTI, DICOM with a
pixel spacing) their spacings must agree to 0.1% and the voxel centres of the grid corners to 0.1
voxel; a PNG/TIFF/NPY mask (no geometry) is checked by shape alone. A DICOM SEG is placed on the
image's grid by each frame's ImagePositionPatient, so its frames may cover any subset of the slices.

Dilation: every pixel within ``dilate_mm`` (Euclidean, in mm, through the image's spacing; across
slices too for a volume) of the mask joins it (scipy.ndimage.distance_transform_edt with sampling).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io import Volume, find_images, read_volume
from ..io.dicom_header import spacing_known
from ..io.readers import ImageItem
from ..io.suffixes import strip_image_suffix

log = logging.getLogger(__name__)

MASK_TAGS = ("", "_mask", "-mask", ".mask", "_seg", "-seg", "_label", "_labels", "_lesion", "_holes")
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
SPACING_RTOL = 1e-3  # relative spacing difference accepted
CORNER_TOL = 0.1  # accepted offset of the grid corners, in voxels


@dataclass(frozen=True)
class MaskSpec:
    """What `meddiff sample --mask PATH [--mask-label N] [--mask-dilate MM]` asks for."""

    path: Path
    label: int | None = None  # None: every nonzero voxel is a hole; N: the voxels equal to N
    dilate_mm: float = 0.0

    def __post_init__(self) -> None:
        if self.dilate_mm < 0 or not np.isfinite(self.dilate_mm):
            raise InputError(f"--mask-dilate {self.dilate_mm}: expected a distance in mm >= 0")
        if self.label is not None and self.label < 0:
            raise InputError(f"--mask-label {self.label}: expected a label value >= 0")


def _key(path: Path, root: Path) -> str:
    """The name of an image below `root` without its image suffix, as a posix path ('a/b/case')."""
    path, root = Path(path).resolve(), Path(root).resolve()
    rel = path.relative_to(root) if root in path.parents else Path(path.name)
    return strip_image_suffix(rel.as_posix())


def _tagless(key: str) -> str:
    """`key` without a trailing MASK_TAGS tag ('case_mask' -> 'case')."""
    for tag in sorted(MASK_TAGS, key=len, reverse=True):
        if tag and key.endswith(tag):
            return key[: -len(tag)]
    return key


def mask_index(folder: Path) -> dict[str, list[Path]]:
    """Masks under `folder` by name key without tag ('sub/case' for sub/case_mask.nii.gz); listed once per
    folder state (the folder's path and modification time), not once per input."""
    return dict(_mask_index(str(Path(folder).resolve()), Path(folder).stat().st_mtime_ns))


@lru_cache(maxsize=8)
def _mask_index(folder: str, mtime_ns: int) -> dict[str, list[Path]]:
    root = Path(folder)
    index: dict[str, list[Path]] = {}
    for it in find_images(root, patient_from="file"):
        index.setdefault(_tagless(_key(it.path, root)), []).append(it.path)
    return index


def find_mask_file(mask: Path, item: ImageItem, input_root: Path | None, index: dict[str, list[Path]] | None = None) -> Path:
    """The mask file of the input `item`: `mask` itself if it is a file (one mask for every input), else
    the file in the folder `mask` matched by name (module docstring). InputError if none or ambiguous."""
    if not mask.exists():
        raise InputError(f"--mask {mask}: no such file or folder; expected a mask image or a folder of masks")
    if mask.is_file():
        return mask
    if _is_series_folder(mask):
        return mask  # a DICOM series folder: one mask volume for every input
    index = mask_index(mask) if index is None else index
    key = _key(item.path, input_root) if input_root is not None else strip_image_suffix(item.path.name)
    found = index.get(key, [])
    if not found:
        base = key.rsplit("/", 1)[-1]
        found = [p for k, ps in index.items() if k.rsplit("/", 1)[-1] == base for p in ps]
    if len(found) == 1:
        return found[0]
    if not found:
        raise InputError(f"--mask {mask}: no mask for the input {item.path} (looked for '{key}' with one of the endings "
                         f"{', '.join(repr(t) for t in MASK_TAGS if t)} or none, and any image suffix; "
                         f"the folder has masks for: {', '.join(sorted(index)[:8]) or 'nothing'})")
    raise InputError(f"--mask {mask}: {len(found)} masks match the input {item.path}: "
                     f"{', '.join(str(p) for p in found)}; keep one")


def _is_series_folder(folder: Path) -> bool:
    from ..io import dicom

    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    return bool(files) and all(dicom.is_dicom_candidate(p) for p in files) and not any(p.is_dir() for p in folder.iterdir())


def has_geometry(vol: Volume) -> bool:
    """True when the volume's spacing and affine come from the file (NIfTI, DICOM with a pixel spacing)."""
    return vol.meta.get("format") in ("nifti", "dicom") and spacing_known(vol.meta)


def grid_corners(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """Patient coordinates (mm) [2^ndim, 3] of the voxel centres at the corners of a grid."""
    nd = len(shape)
    idx = np.array(np.meshgrid(*[[0, n - 1] for n in shape], indexing="ij")).reshape(nd, -1).T
    homog = np.zeros((idx.shape[0], 4))
    homog[:, :nd], homog[:, 3] = idx, 1.0
    return (np.asarray(affine, float) @ homog.T).T[:, :3]


def check_geometry(mask: Volume, image: Volume, mask_path: Path, image_path: Path) -> None:
    """InputError naming both files when the mask is not on the image's grid (shape; and, when both carry
    geometry, spacing and the position of the grid's corners)."""
    if mask.shape != image.shape:
        raise InputError(f"mask {mask_path} has shape {mask.shape}, the image {image_path} {image.shape}; "
                         "expected a mask on the image's grid (a 3D mask for a volume, one mask per image with --mask DIR)")
    if not (has_geometry(mask) and has_geometry(image)):
        return
    ms, im = np.asarray(mask.spacing, float), np.asarray(image.spacing, float)
    if not np.allclose(ms, im, rtol=SPACING_RTOL, atol=0.0):
        raise InputError(f"mask {mask_path} has voxel spacing {tuple(round(s, 4) for s in ms)} mm, the image {image_path} "
                         f"{tuple(round(s, 4) for s in im)} mm; expected the same grid (resample the mask onto the image)")
    offset = np.linalg.norm(grid_corners(mask.shape, mask.affine) - grid_corners(image.shape, image.affine), axis=1).max()
    if offset > CORNER_TOL * float(im.min()):
        raise InputError(f"mask {mask_path} is not on the grid of the image {image_path}: their affines put the corner voxels "
                         f"up to {offset:.2f} mm apart (voxel {float(im.min()):.2f} mm); expected the same position and "
                         "orientation (a mask drawn on another series or a flipped/resampled copy?)")


def select_label(array: np.ndarray, label: int | None, path: Path) -> np.ndarray:
    """Holes of a mask / label map: nonzero voxels, or those equal to `label` (InputError if it is absent)."""
    if label is None:
        return array != 0
    holes = np.isclose(array, float(label))
    if not holes.any():
        values = np.unique(array)
        shown = ", ".join(f"{v:g}" for v in values[:12]) + (" ..." if values.size > 12 else "")
        raise InputError(f"--mask-label {label}: {path} has no voxel of label {label} (its values: {shown})")
    return holes


def dilate(holes: np.ndarray, spacing: tuple[float, ...], mm: float) -> np.ndarray:
    """`holes` grown by every voxel within `mm` millimetres (Euclidean, voxel centres, through `spacing`)."""
    if mm <= 0 or not holes.any():
        return holes
    from scipy.ndimage import distance_transform_edt

    return distance_transform_edt(~holes, sampling=tuple(float(s) for s in spacing)) <= mm


def _lps_to_ras(p) -> np.ndarray:
    x, y, z = (float(v) for v in p)
    return np.array([-x, -y, z])


def read_seg(path: Path, image: Volume, label: int | None) -> np.ndarray:
    """A DICOM Segmentation (binary or fractional) as holes on the image's grid: every frame of the chosen
    segment (all segments if `label` is None) placed on the slice its ImagePositionPatient names."""
    import pydicom

    ds = pydicom.dcmread(str(path))
    frames = np.asarray(ds.pixel_array)
    frames = frames[None] if frames.ndim == 2 else frames
    if frames.shape[-2:] != image.shape[-2:]:
        raise InputError(f"DICOM SEG {path} has frames of {frames.shape[-2]}x{frames.shape[-1]} pixels, the image "
                         f"{image.source} {image.shape[-2]}x{image.shape[-1]}; expected the image's grid")
    seg_type = str(ds.get("SegmentationType", "BINARY"))
    on = frames > 0 if seg_type == "BINARY" else frames >= 0.5 * float(ds.get("MaximumFractionalValue", 255) or 255)
    segments = sorted(int(s.SegmentNumber) for s in ds.get("SegmentSequence", []))
    if label is not None and label not in segments:
        raise InputError(f"--mask-label {label}: DICOM SEG {path} has segments {segments}, not {label}")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is None or len(per_frame) != frames.shape[0]:
        raise InputError(f"DICOM SEG {path}: expected a PerFrameFunctionalGroupsSequence item per frame ({frames.shape[0]})")
    inv = np.linalg.inv(np.asarray(image.affine, float))
    holes = np.zeros(image.shape, bool)
    for k, fg in enumerate(per_frame):
        seg_no = int(fg.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        if label is not None and seg_no != label:
            continue
        try:
            ipp = fg.PlanePositionSequence[0].ImagePositionPatient
        except (AttributeError, IndexError):
            raise InputError(f"DICOM SEG {path}: frame {k + 1} has no PlanePositionSequence/ImagePositionPatient, so it "
                             "cannot be placed on the image") from None
        idx = (inv @ np.append(_lps_to_ras(ipp), 1.0))[:3]
        # the frame's first pixel is voxel (z, 0, 0) of a volume or (0, 0, .) of a 2D image
        z, rest = (idx[0], idx[1:]) if image.ndim == 3 else (0.0, idx[:2])
        if np.abs(rest).max() > CORNER_TOL or abs(z - round(z)) > CORNER_TOL or not 0 <= round(z) < (image.shape[0] if image.ndim == 3 else 1):
            raise InputError(f"DICOM SEG {path}: frame {k + 1} at ImagePositionPatient {list(map(float, ipp))} lies on no slice "
                             f"of the image {image.source} (voxel {np.round(idx, 2).tolist()}); expected a SEG of this series")
        if image.ndim == 3:
            holes[int(round(z))] |= on[k]
        else:
            holes |= on[k]
    return holes


def is_seg(path: Path) -> bool:
    """True for a DICOM file whose SOP class is Segmentation Storage (header only)."""
    from ..io import dicom

    if not path.is_file() or not dicom.is_dicom_candidate(path):
        return False
    try:
        import pydicom

        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    except Exception:
        return False
    return str(ds.get("SOPClassUID", "")) == SEG_SOP_CLASS or str(ds.get("Modality", "")) == "SEG"


def read_mask(path: Path, image: Volume, label: int | None = None) -> np.ndarray:
    """The holes (bool, image.shape) of the mask file `path` for `image`, geometry checked."""
    if is_seg(path):
        return read_seg(path, image, label)
    mvol = read_volume(path)
    check_geometry(mvol, image, path, image.source)
    return select_label(np.asarray(mvol.array), label, path)


def mask_for(spec: MaskSpec, item: ImageItem, image: Volume, input_root: Path | None = None,
             index: dict[str, list[Path]] | None = None) -> np.ndarray:
    """The holes (bool, image.shape; True = missing) of one input: its mask file found (find_mask_file),
    read on the image's grid with the label chosen (read_mask), dilated by spec.dilate_mm (mm, the
    image's spacing; InputError when the image has no known spacing)."""
    path = find_mask_file(spec.path, item, input_root, index)
    holes = read_mask(path, image, spec.label)
    if spec.dilate_mm > 0:
        if not spacing_known(image.meta):
            raise InputError(f"--mask-dilate {spec.dilate_mm} mm: the image {image.source} has no pixel spacing "
                             f"({image.meta.get('spacing_source')}); give the image with its geometry (NIfTI/DICOM)")
        holes = dilate(holes, image.spacing, spec.dilate_mm)
    if not holes.any():
        log.warning("mask %s leaves no hole in %s: the output is the input", path, item.path)
    log.info("mask %s for %s: %.1f%% of the voxels are holes", path, item.path, 100.0 * holes.mean())
    return holes
