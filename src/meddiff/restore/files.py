"""The restore pipeline on files: read each input (meddiff.io), normalise per image to [-1, 1], cut
2D slices along an axis, build the condition planes of the task, restore the slices (any
`restore_slices(planes, lowres, name) -> [S, N, 1, H, W]`: a DDPM's sampler, a VDM's, a learned or
classical baseline, see restore.models), undo the normalisation and write in the input's format
with the input's geometry (super-resolution: spacing and affine scaled to the finer grid).

Products per input: ``restored`` (one sample), or ``mean``, ``std`` and ``sample<k>`` (several).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..config import TaskConfig
from ..data.degrade import SuperResolution, build_degradation
from ..data.normalise import Normalisation
from ..data.slices import from_slices, to_slices
from ..errors import InputError
from ..inference import summarise
from ..io import Volume, find_images, read_volume, write_volume
from ..io.readers import ImageItem
from ..io.suffixes import strip_image_suffix

log = logging.getLogger(__name__)

_EXT = {"nifti": ".nii.gz", "png": ".png", "dicom": ".dcm", "dicom_series": "", "tiff": ".png", "raster": ".png", "numpy": ".nii.gz"}
RestoreSlices = Callable[[torch.Tensor, "torch.Tensor | None", Path], torch.Tensor]


@dataclass(frozen=True)
class Request:
    """What to restore and how (the fields of `meddiff sample`; None = the checkpoint's setting).

    checkpoint: a model file / checkpoint folder / run folder, or method: a classical baseline;
    input: an image file, a DICOM series folder or a folder of them; output: the output folder."""

    output: Path
    input: Path | None = None
    checkpoint: str | None = None
    method: str | None = None
    sampler: str | None = None
    steps: int | None = None
    eta: float | None = None
    grid: str | None = None
    samples: int = 1
    seed: int = 0
    batch_size: int = 8
    precision: str | None = None
    sr_factor: float | None = None
    axis: int = 0
    input_kind: str = "lowres"  # super-resolution: "lowres" input, or "upsampled" (already on the target grid)
    consistency: str = "none"
    resample: int = 1
    mask: Path | None = None
    clip_percentiles: tuple[float, float] | None = None
    format: str = "same"
    keep_patient_tags: bool = False
    progress: bool = True

    @classmethod
    def from_namespace(cls, args: Any) -> "Request":
        """The request of parsed `meddiff sample` arguments (--no-progress -> progress=False)."""
        values = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
        return cls(**values, progress=not getattr(args, "no_progress", False))


def safe_folder_name(name: str) -> str:
    """A patient id as one folder name: characters other than letters, digits, '.', '_', '-'
    become '_' (a DICOM PatientID like '../x' or 'a/b' must not leave the output folder)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name.strip())
    return "unknown" if safe.strip(".") == "" else safe


def output_path(out_dir: Path, item: ImageItem, fmt: str, tag: str) -> Path:
    """Output file for one input and one product (restored / mean / std / sample_k):
    ``out_dir/<patient id, made safe>/<input stem>_<tag><ext>``."""
    kind = item.kind if fmt == "same" else fmt
    stem = strip_image_suffix(item.path.name)
    ext = _EXT.get(kind, ".nii.gz")
    return out_dir / safe_folder_name(item.patient_id) / f"{stem}_{tag}{ext}"


def scaled_geometry(vol: Volume, factor: float, axis: int, shape: tuple[int, ...]) -> tuple[tuple[float, ...], np.ndarray]:
    """Spacing and affine of the super-resolved grid: in-plane axes get `factor`x more voxels.

    Voxel centres: new index j' sits at old continuous index (j' + 0.5) / f - 0.5, so the field
    of view is unchanged.
    """
    in_plane = [a for a in range(vol.ndim) if vol.ndim == 2 or a != axis]
    scale = np.ones(vol.ndim)
    for a in in_plane:
        scale[a] = vol.shape[a] / shape[a]
    m = np.eye(4)
    for a in range(vol.ndim):
        m[a, a] = scale[a]
        m[a, 3] = (scale[a] - 1) / 2
    spacing = tuple(float(s * scale[a]) for a, s in enumerate(vol.spacing))
    return spacing, np.asarray(vol.affine, float) @ m


def restore_files(args: Request, task: TaskConfig, restore_slices: RestoreSlices, describe: str) -> list[Path]:
    """Read each input, normalise, build the condition planes, call restore_slices(planes, lowres, name)
    -> [S, N, 1, H, W], undo the normalisation and write in the input's format (the path shared by
    DDPM and VDM checkpoints, learned and classical baselines). Returns the files written."""
    if task.kind == "inpaint" and args.mask is None:
        what = f"--method {args.method}" if args.method else "this checkpoint"
        raise InputError(f"{what} inpaints: give --mask FILE (nonzero where pixels are missing)")
    if args.input is None:
        raise InputError("--input is required to restore images")
    items = [args.input] if args.input.is_file() else find_images(args.input)
    if not items:
        raise InputError(f"{args.input}: no readable image found")
    deg = build_degradation(task)
    written: list[Path] = []
    for item in items:
        written += restore_file(args, task, deg, item, restore_slices, describe)
    return written


def read_item(item: ImageItem | Path) -> tuple[Volume, ImageItem]:
    """The volume of one input and its ImageItem (a plain file path gets one, its kind from the suffix)."""
    vol = read_volume(item)
    if not isinstance(item, ImageItem):
        kind = "nifti" if str(item).lower().endswith((".nii", ".nii.gz")) else (
            "dicom" if str(item).lower().endswith(".dcm") else "raster" if str(item).lower().endswith((".png", ".tif", ".tiff")) else "numpy")
        item = ImageItem(path=Path(item), patient_id=vol.patient_id, kind=kind, files=(Path(item),))
    return vol, item


def condition_planes(args: Request, task: TaskConfig, deg: Any, vol: Volume, item: ImageItem, x: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(cond, mask, model condition planes, low-resolution slices or None) of the normalised slices x
    [N, 1, h, w]: super-resolution upsamples a low-resolution input, inpainting reads --mask."""
    if task.kind == "sr" and args.input_kind == "lowres":
        assert isinstance(deg, SuperResolution)
        size = (round(x.shape[-2] * task.sr_factor), round(x.shape[-1] * task.sr_factor))
        cond = deg.upsample(x, size)
        mask = torch.ones_like(cond)
    elif task.kind == "inpaint":
        mvol = read_volume(args.mask)
        if mvol.shape != vol.shape:
            raise InputError(f"--mask {args.mask} has shape {mvol.shape}, expected {vol.shape} like {item.path}")
        mask = torch.from_numpy(to_slices((mvol.array != 0).astype(np.float32), args.axis).copy())[:, None]
        cond = x * (1 - mask)
    else:
        cond, mask = x, torch.ones_like(x)
    lowres = x if task.kind == "sr" and args.input_kind == "lowres" else None
    return cond, mask, deg.model_condition(cond, mask), lowres


def restore_file(args: Request, task: TaskConfig, deg: Any, item: ImageItem | Path, restore_slices: RestoreSlices,
                 describe: str) -> list[Path]:
    """One input through the pipeline (restore_files); returns the files written."""
    vol, item = read_item(item)
    norm = Normalisation.from_volume(vol, percentiles=tuple(args.clip_percentiles) if args.clip_percentiles else None)
    x = torch.from_numpy(to_slices(norm.forward(vol.array), args.axis).copy()).float()[:, None]
    cond, mask, planes, lowres = condition_planes(args, task, deg, vol, item, x)
    out = restore_slices(planes, lowres, item.path)
    if task.kind == "inpaint":  # known pixels are measurements: keep them exactly
        out = out * mask + cond * (1 - mask)
    written = write_products(args, task, vol, item, norm, out, describe)
    log.info("%s -> %s", item.path, args.output / safe_folder_name(item.patient_id))
    return written


def write_products(args: Request, task: TaskConfig, vol: Volume, item: ImageItem, norm: Normalisation,
                   out: torch.Tensor, describe: str) -> list[Path]:
    """Write the restored / mean / std / sample<k> volumes of out [S, N, 1, H, W] (normalised units)."""
    mean, std = summarise(out)
    out_shape = from_slices(mean[:, 0].numpy(), vol.ndim, args.axis).shape
    spacing, affine = (vol.spacing, vol.affine) if out_shape == vol.shape else scaled_geometry(vol, task.sr_factor, args.axis, out_shape)

    def volume_of(arr: torch.Tensor, what: str) -> Volume:
        a = from_slices(arr[:, 0].numpy(), vol.ndim, args.axis).astype(np.float32)
        return Volume(a, spacing, affine, vol.patient_id, vol.source,
                      {**vol.meta, "derived": f"meddiff {task.kind} {what}, {describe}"})

    products = {"restored": norm.inverse(mean)} if args.samples == 1 else {"mean": norm.inverse(mean), "std": std * norm.scale()}
    if args.samples > 1:
        products.update({f"sample{s}": norm.inverse(out[s]) for s in range(args.samples)})
    written: list[Path] = []
    for tag, arr in products.items():
        path = output_path(args.output, item, args.format, tag)
        v = volume_of(arr, tag)
        ref = vol if v.shape == vol.shape else None
        written += write_volume(v, path, reference=ref, synthetic=True, keep_patient_tags=args.keep_patient_tags,
                                description=f"meddiff {task.kind} ({tag})", overwrite=True)
    return written
