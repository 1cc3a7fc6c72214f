"""Paired test sets from a user's own high-resolution images, with the training degradation.

    OUT/truth/<rel>/<name>   the original image (the ground truth): a DICOM source written again de-identified
                             (same values, no patient/private tags, UIDs replaced), others copied unchanged
    OUT/input/<rel>/<name>   the degraded image (meddiff.data.degrade), same name, in the input's format
    OUT/mask/<rel>/<name>    inpainting only: the holes (1 = missing)
    OUT/pairs.json           task, seed, per-image noise levels / hole fractions, the command

so that ``meddiff sample -i OUT/input -o PRED`` and ``meddiff evaluate --pred m=PRED --truth OUT/truth
--input OUT/input`` score a model on the user's data. Each image is normalised to [-1, 1] as
`meddiff sample` does (min/max or percentiles), cut into 2D slices along `axis`, degraded and
mapped back to its original units. Super-resolution writes the low-resolution measurement
(round(H / factor) x round(W / factor) in-plane, spacing and affine scaled, field of view kept),
the input `meddiff sample --input-kind lowres` expects. Randomness (noise, holes) comes from one
generator per image seeded by (seed, the image's relative path): reruns and subsets agree.
"""

from __future__ import annotations

import json
import shutil
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import TaskConfig
from ..errors import InputError
from ..io import Volume, find_images, read_volume, write_volume
from ..io.phi import public_relpath
from ..io.readers import ImageItem
from .degrade import Denoise, Inpaint, SuperResolution, build_degradation
from .normalise import Normalisation
from .slices import from_slices, to_slices

_EXT = {"nifti": ".nii.gz", "dicom": ".dcm", "dicom_series": "", "tiff": ".tif", "raster": ".png", "numpy": ".npy"}
_SUFFIXES = (".nii.gz", ".nii", ".dcm", ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".npy", ".npz")


@dataclass
class PairsSummary:
    images: int = 0
    written: list[Path] = field(default_factory=list)
    levels: dict[str, dict] = field(default_factory=dict)  # relative name -> what was drawn


def image_seed(seed: int, rel: str) -> int:
    """Seed of one image's generator: stable under reordering and subsets of the input folder."""
    return (seed * 1_000_003 + zlib.crc32(rel.encode("utf-8"))) % (2**63)


def regridded(vol: Volume, shape: tuple[int, ...]) -> tuple[tuple[float, ...], np.ndarray]:
    """Spacing and affine of `vol`'s field of view sampled on `shape`: axis a gets spacing
    s_a * n_a / m_a, and new index j sits at old continuous index (j + 0.5) * n_a / m_a - 0.5."""
    scale = np.array([n / m for n, m in zip(vol.shape, shape)], float)
    m = np.eye(4)
    for a, s in enumerate(scale):
        m[a, a], m[a, 3] = s, (s - 1) / 2
    return tuple(float(sp * s) for sp, s in zip(vol.spacing, scale)), np.asarray(vol.affine, float) @ m


MIN_LOWRES = 4  # pixels a side of a super-resolution measurement


def degrade_slices(x: torch.Tensor, task: TaskConfig, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None, dict]:
    """[N, 1, H, W] in [-1, 1] -> (degraded input, hole mask or None, levels drawn); SR returns the
    low-resolution measurement [N, 1, h, w]."""
    deg = build_degradation(task)
    if isinstance(deg, SuperResolution):
        return deg.downsample(x), None, {"factor": task.sr_factor}
    if isinstance(deg, Denoise):
        sigma, p = deg.draw_levels(x.shape[0], generator, x)
        return deg.apply(x, sigma, p, generator), None, {"noise_std": sigma.tolist(), "salt_pepper": p.tolist()}
    assert isinstance(deg, Inpaint)
    mask = deg.masks(x.shape[0], tuple(x.shape[-2:]), generator).to(x.dtype)
    return x * (1 - mask), mask, {"hole_fraction": mask.mean(dim=(1, 2, 3)).tolist()}


def _rel_name(item: ImageItem, root: Path, *, public: bool = True) -> tuple[Path, str]:
    """(relative folder, stem) of an item below `root` (a series folder: its own name); `public`: every
    folder name pseudonymised (meddiff.io.phi: no patient-named folder reaches an output name)."""
    if public:
        rel = public_relpath(item.path, root, is_dir=item.kind == "dicom_series")
    else:
        rel = item.path.relative_to(root) if root in item.path.parents else Path(item.path.name)
    name = rel.name
    for suf in _SUFFIXES:
        if name.lower().endswith(suf):
            return rel.parent, name[: -len(suf)]
    return rel.parent, name


def _copy_truth(item: ImageItem, dest: Path, vol=None, provenance: dict | None = None) -> list[Path]:
    """The ground truth: a DICOM source is written again de-identified (same pixel values, no patient or
    private tags, UIDs replaced as for the degraded input: never copied byte for byte); any other file is
    copied unchanged (a file, or a series folder with its files)."""
    if item.kind in ("dicom", "dicom_series") and vol is not None:
        target = dest.with_suffix("") if item.kind == "dicom_series" else (dest if dest.suffix.lower() == ".dcm" else dest.with_name(dest.name + ".dcm"))
        return write_volume(vol, target, synthetic=False, description="meddiff degrade: ground truth (the source, de-identified)",
                            format="dicom", overwrite=True, provenance=provenance or {})
    if item.kind == "dicom_series":
        dest.mkdir(parents=True, exist_ok=True)
        for f in item.files:
            shutil.copy2(f, dest / f.name)
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(item.path, dest)
    return [dest]


def degrade_item(item: ImageItem, root: Path, out: Path, task: TaskConfig, *, seed: int, axis: int,
                 percentiles: tuple[float, float] | None, allow_rgb: bool, provenance: dict) -> tuple[str, dict, list[Path]]:
    """Write one image's truth, degraded input (and mask); returns (relative name, levels, files written)."""
    vol = read_volume(item, allow_rgb_to_gray=allow_rgb)
    folder, stem = _rel_name(item, root)
    rel = (folder / stem).as_posix()
    seed_name = "/".join(_rel_name(item, root, public=False)[0].parts + (_rel_name(item, root, public=False)[1],))
    norm = Normalisation.from_volume(vol, percentiles=percentiles)
    x = torch.from_numpy(to_slices(norm.forward(vol.array), axis).copy()).float()[:, None]
    if task.kind == "sr" and min(round(n / task.sr_factor) for n in x.shape[-2:]) < MIN_LOWRES:
        h, w = x.shape[-2:]
        raise InputError(f"--factor {task.sr_factor:g}: {item.path} is {h}x{w} pixels, so its low-resolution image would be "
                         f"{round(h / task.sr_factor)}x{round(w / task.sr_factor)}; expected a factor of at most "
                         f"{min(h, w) / MIN_LOWRES:g} (at least {MIN_LOWRES} pixels a side)")
    g = torch.Generator().manual_seed(image_seed(seed, seed_name))  # the input's own name: the key changes no noise
    y, mask, levels = degrade_slices(x, task, g)
    arr = from_slices(norm.inverse(y[:, 0]).numpy(), vol.ndim, axis).astype(np.float32)
    spacing, affine = (vol.spacing, vol.affine) if arr.shape == vol.shape else regridded(vol, arr.shape)
    ext = ".npz" if item.kind == "numpy" and item.path.suffix.lower() == ".npz" else _EXT.get(item.kind, ".nii.gz")
    what = f"meddiff degrade {task.kind} " + json.dumps(levels if task.kind == "sr" else {"seed": seed})
    degraded = Volume(arr, spacing, affine, vol.patient_id, vol.source, {**vol.meta, "derived": what})
    written = write_volume(degraded, out / "input" / folder / f"{stem}{ext}", reference=vol if arr.shape == vol.shape else None,
                           synthetic=False, description=what, overwrite=True, provenance={**provenance, "source": rel})
    if mask is not None:
        m = from_slices(mask[:, 0].numpy(), vol.ndim, axis).astype(np.float32)
        mvol = Volume(m, vol.spacing, vol.affine, vol.patient_id, vol.source, {"derived": "meddiff degrade inpaint mask"})
        written += write_volume(mvol, out / "mask" / folder / f"{stem}.nii.gz", synthetic=False,
                                description="meddiff inpainting mask (1 = missing)", overwrite=True, provenance=provenance)
    truth = out / "truth" / folder / (item.path.name if item.kind != "dicom_series" else stem)
    truth_files = _copy_truth(item, truth, vol, {**provenance, "source": rel})
    return rel, levels, [*written, *truth_files]


def make_pairs(inp: str | Path, out: str | Path, task: TaskConfig, *, seed: int = 0, axis: int = 0,
               percentiles: tuple[float, float] | None = None, allow_rgb: bool = False, overwrite: bool = False,
               provenance: dict | None = None) -> PairsSummary:
    """Degrade every image under `inp` (a file, a DICOM series folder or a folder of images) into `out`
    (module docstring). The output folder must be new or empty (or meddiff's, with `overwrite`)."""
    from ..io.atomic import atomic_write_text
    from ..io.outdir import check_output_dir, mark
    from ..io.readers import missing

    inp, out = Path(inp), Path(out)
    if not inp.exists():
        raise InputError(f"--input {missing(inp, 'an image file, a DICOM series folder or a folder of images')}")
    build_degradation(task)  # validates the task's ranges before any work
    check_output_dir(out, [inp], overwrite=overwrite, inside_input_ok=not inp.is_dir(), verb="degrade")
    items, root = _items(inp)
    if not items:
        raise InputError(f"{inp}: no readable image found")
    summary = PairsSummary(images=len(items))
    mark(out, "degrade", task=task.kind, seed=seed)
    for item in items:
        rel, levels, files = degrade_item(item, root, out, task, seed=seed, axis=axis, percentiles=percentiles,
                                          allow_rgb=allow_rgb, provenance=provenance or {})
        summary.levels[rel] = levels
        summary.written += files
    doc = {"task": task.kind, "sr_factor": task.sr_factor if task.kind == "sr" else None, "seed": seed, "axis": axis,
           "clip_percentiles": percentiles, "images": summary.levels, **(provenance or {})}
    atomic_write_text(out / "pairs.json", json.dumps(doc, indent=1) + "\n")
    return summary


def _items(inp: Path) -> tuple[list[ImageItem], Path]:
    """(images, the root their relative names start from): a folder of images, a DICOM series
    folder (one image, named after the folder) or one file."""
    from ..io.readers import _kind_of  # the format of one file from its name / DICOM preamble

    if inp.is_dir():
        items = find_images(inp)
        if len(items) == 1 and items[0].kind == "dicom_series" and items[0].path == inp:
            return items, inp.parent
        return items, inp
    kind = _kind_of(inp)
    if kind is None:
        raise InputError(f"--input {inp}: unknown image format (suffix '{inp.suffix}')")
    return [ImageItem(path=inp, patient_id=inp.name.split(".")[0], kind=kind, files=(inp,))], inp.parent
