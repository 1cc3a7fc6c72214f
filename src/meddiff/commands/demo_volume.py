"""`meddiff demo --volume`: Colin27 restored as a volume, shown and measured in its three planes.

Colin27 (one person the shipped models never saw; src/meddiff/data/samples/colin27) is degraded as
the checkpoint was trained to undo and restored as ONE volume through the restore pipeline's models
(meddiff.restore: 2D slice by slice with shared noise, 2.5D with the neighbouring slices, a 3D model in
overlapping windows):

- in-plane models (2D, 2.5D, 3D): the axial stack (1 x 1 mm in-plane, slices 3 mm apart), each slice
  downsampled x4 (anti-aliased bicubic, meddiff.data.degrade.SuperResolution);
- thick-slice models (task.sr_axis through): the coronal stack turned so that its S-I rows (1 mm
  apart) are the slice axis, averaged in thick slices of `factor` rows (meddiff.data.thick).

Writes volume.png (the middle plane along each axis: truth, bicubic, restored and both errors),
results.md / results.csv (PSNR / SSIM per plane; the through-plane error along the slice axis
relative to bicubic's, meddiff.metrics.volume) and the restored volume (NIfTI, Colin27's geometry).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..checkpointing.named import resolve_checkpoint, shipped_models
from ..data.degrade import SuperResolution
from ..data.normalise import Normalisation
from ..data.samples import samples_dir
from ..data.thick import thick_slices, upsample_axis
from ..diffusion.checkpoint import load_model
from ..errors import InputError
from ..io import Volume, read_volume, write_volume
from ..io.atomic import atomic_path, atomic_write_text
from ..io.outdir import check_output_dir, mark
from ..metrics.volume import plane_metrics, through_plane_error
from ..restore.files import Request
from ..restore.restorers import ddpm_restorer
from ..restore.volume import layout_of
from ..config.device import pick_device

VOLUME_MODELS = ("sr_x4_2p5d", "sr_x4_general")  # the default: the first one shipped (models.yaml)


def default_volume_checkpoint() -> str:
    """`sr_x4_2p5d` once src/meddiff/checkpoints/models.yaml lists it, else `sr_x4_general` (shared noise)."""
    names = {card.name for card in shipped_models()}
    return next((m for m in VOLUME_MODELS if m in names), VOLUME_MODELS[-1])


@dataclass(frozen=True)
class VolumeCase:
    """truth [D, H, W] in [-1, 1] (slice axis D first); planes [D, 1, H, W]: the degraded slices
    interpolated back (the "bicubic" baseline and the model's condition); lowres: what was measured
    (low-resolution slices [D, 1, h, w] or thick slices [D / f, 1, H, W]); spacing, affine (mm, RAS+,
    meddiff's [D, H, W] axis order) and the normalisation back to the file's units."""

    name: str
    truth: np.ndarray
    planes: torch.Tensor
    lowres: torch.Tensor
    spacing: tuple[float, float, float]
    affine: np.ndarray
    norm: object


def _crop(array: np.ndarray, affine: np.ndarray, slices: int | None, crop: int | None, multiple: tuple[int, int, int]):
    """The middle `slices` along D and the centred `crop` x `crop` in-plane (all of it for None), each axis
    cut to a multiple of `multiple`; the affine moved to the crop's first voxel."""
    sizes = [slices or array.shape[0], crop or array.shape[1], crop or array.shape[2]]
    starts = []
    for a in range(3):
        n = min(sizes[a], array.shape[a]) // multiple[a] * multiple[a]
        sizes[a] = n
        starts.append((array.shape[a] - n) // 2)
    box = tuple(slice(s, s + n) for s, n in zip(starts, sizes))
    shift = np.eye(4)
    shift[:3, 3] = starts
    return array[box], np.asarray(affine, float) @ shift


def colin27_case(thick: int, factor: float, slices: int | None, crop: int | None) -> VolumeCase:
    """The Colin27 stack for an in-plane (thick = 0) or thick-slice (thick = f) model, degraded."""
    colin = samples_dir("colin27") / "colin27"
    if thick:  # coronal stack [slices, S-I rows, R-L columns] -> [S-I, slices, R-L]: thick slices along S-I
        vol = read_volume(colin / "coronal.nii.gz")
        array, affine, spacing = vol.array.transpose(1, 0, 2), np.asarray(vol.affine)[:, [1, 0, 2, 3]], vol.spacing
        spacing = (spacing[1], spacing[0], spacing[2])
        array, affine = _crop(array, affine, slices, crop, (thick, 1, 1))
    else:
        vol = read_volume(colin / "axial.nii.gz")
        array, affine = _crop(vol.array, vol.affine, slices, crop, (1, 4, 4))
        spacing = vol.spacing
    norm = Normalisation.from_arrays([array])
    truth = norm.forward(array.astype(np.float64)).astype(np.float32)
    x = torch.from_numpy(np.ascontiguousarray(truth))[:, None]
    if thick:
        lowres = thick_slices(x, thick, 0)
        planes = upsample_axis(lowres, x.shape[0], 0, "cubic").clamp(-1.0, 1.0)
    else:
        deg = SuperResolution(factor)
        lowres = deg.downsample(x)
        planes = deg.upsample(lowres, tuple(x.shape[-2:]))
    name = f"colin27 {'coronal stack, thick slices along S-I' if thick else 'axial stack, in-plane'} x{factor:g}"
    return VolumeCase(name, truth, planes, lowres, tuple(float(s) for s in spacing), affine, norm)


def scores(case: VolumeCase, methods: dict[str, np.ndarray]) -> list[dict]:
    """Per method: PSNR / SSIM averaged over the planes along each axis, and the through-plane error
    along the slice axis relative to bicubic's (meddiff.metrics.volume; data range 2)."""
    ref = through_plane_error(methods["bicubic"], case.truth, 0)
    rows = []
    for name, vol in methods.items():
        row = {"method": name}
        for axis, plane in enumerate(("slices", "reformat 1", "reformat 2")):
            row[f"psnr_{plane}"], row[f"ssim_{plane}"] = plane_metrics(vol, case.truth, axis, 2.0)
        row["through_plane_error_vs_bicubic"] = through_plane_error(vol, case.truth, 0) / ref
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    head = "| method | slices PSNR / SSIM | reformat 1 PSNR / SSIM | reformat 2 PSNR / SSIM | through-plane error / bicubic's |"
    lines = [head, "|---|---|---|---|---:|"]
    for r in rows:
        cells = [f"{r[f'psnr_{p}']:.2f} / {r[f'ssim_{p}']:.3f}" for p in ("slices", "reformat 1", "reformat 2")]
        lines.append(f"| {r['method']} | " + " | ".join(cells) + f" | {r['through_plane_error_vs_bicubic']:.3f} |")
    return "\n".join(lines) + "\n"


def figure(case: VolumeCase, methods: dict[str, np.ndarray], path: Path) -> Path:
    """Rows: truth, bicubic, restored, |bicubic - truth|, |restored - truth|; columns: the middle plane
    along each axis (pixel aspect from the spacing; reformats with superior at the top)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    restored = [k for k in methods if k != "bicubic"][0]
    rows = {"truth": case.truth, "bicubic": methods["bicubic"], restored: methods[restored],
            "|bicubic - truth|": np.abs(methods["bicubic"] - case.truth), f"|{restored} - truth|": np.abs(methods[restored] - case.truth)}
    sp = case.spacing
    aspects = (sp[1] / sp[2], sp[0] / sp[2], sp[0] / sp[1])
    up = float(np.asarray(case.affine)[2, 0]) > 0  # the slice index runs inferior -> superior: flip the reformats' rows
    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 2.4 * len(rows)), squeeze=False)
    for r, (name, vol) in enumerate(rows.items()):
        error = name.startswith("|")
        for axis in range(3):
            img = np.take(vol, vol.shape[axis] // 2, axis=axis)
            img = img[::-1] if axis and up else img
            ax = axes[r, axis]
            ax.imshow(img, cmap="magma" if error else "gray", vmin=0 if error else -1, vmax=0.5 if error else 1,
                      aspect=aspects[axis], interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(f"{name}: {('slices', 'reformat 1', 'reformat 2')[axis]}", fontsize=8)
    fig.suptitle(case.name + " (errors on the [-1, 1] scale, 0 to 0.5)", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return path


def restore_case(args: argparse.Namespace, case: VolumeCase, device) -> tuple[np.ndarray, str]:
    """The restored volume [D, H, W] in [-1, 1] and the run's description, through restore.restorers."""
    req = Request(output=args.out, checkpoint=str(args.checkpoint), sampler=args.sampler, steps=args.steps, eta=args.eta,
                  grid=args.grid, precision=args.precision, seed=args.seed, consistency=args.consistency,
                  noise=args.noise, progress=not args.no_progress)
    restorer = ddpm_restorer(req, device)
    run_sampler, describe = restorer.restore_slices, restorer.describe
    out = run_sampler(case.planes, case.lowres, Path("colin27"), None)
    return out[0, :, 0].numpy(), describe


def run_volume(args: argparse.Namespace) -> int:
    """`meddiff demo --volume` (module docstring)."""
    t0 = time.perf_counter()
    if (args.slices is not None and args.slices < 1) or (args.crop is not None and args.crop < 8):
        raise InputError(f"meddiff demo --volume: expected --slices >= 1 and --crop >= 8, got {args.slices} and {args.crop}")
    args.checkpoint = resolve_checkpoint(args.checkpoint or default_volume_checkpoint())
    check_output_dir(args.out, [args.checkpoint], overwrite=args.overwrite, verb="demo")
    device = pick_device(args.device, what="--device")
    cfg = load_model(args.checkpoint, expect_task="sr", device="cpu")[0]
    layout = layout_of(cfg)
    case = colin27_case(layout.thick, cfg.task.sr_factor, args.slices, args.crop)
    mark(args.out, "demo")
    t = time.perf_counter()
    restored, describe = restore_case(args, case, device)
    seconds = time.perf_counter() - t
    model = "2.5D" if layout.context else ("3D" if layout.spatial_dims == 3 else "2D")
    methods = {"bicubic": case.planes[:, 0].numpy(), f"meddiff {model}": restored}
    rows = scores(case, methods)
    table = markdown(rows)
    notes = (f"\n{case.name}: {case.truth.shape[0]} x {case.truth.shape[1]} x {case.truth.shape[2]} voxels of "
             f"{' x '.join(f'{s:g}' for s in case.spacing)} mm; checkpoint {Path(args.checkpoint).name}; {describe}; "
             f"{seconds:.0f} s on {device}. PSNR / SSIM averaged over the planes along each axis (data range 2); "
             "through-plane error = RMS of (slice-to-slice difference - the truth's) along the slice axis, "
             "relative to bicubic's (below 1: more coherent than bicubic).\n")
    atomic_write_text(args.out / "results.md", table + notes)
    keys = list(rows[0])
    atomic_write_text(args.out / "results.csv", ",".join(keys) + "\n" + "".join(
        ",".join(str(r[k]) for k in keys) + "\n" for r in rows))
    figure(case, methods, args.out / "volume.png")
    vol = Volume(case.norm.inverse(restored).astype(np.float32), case.spacing, case.affine, "colin27",
                 Path("colin27"), {"derived": f"meddiff demo --volume, {describe}"})
    write_volume(vol, args.out / "colin27_restored.nii.gz", synthetic=True, overwrite=True,
                 provenance={"checkpoint": str(args.checkpoint), "restoration": describe})
    print(table + notes)
    print(f"figure: {args.out / 'volume.png'}  ({time.perf_counter() - t0:.0f} s in all)")
    return 0
