"""`meddiff sample`: restore DICOM / NIfTI / PNG / NPY images with a trained model, slice by slice.

Input handling (per file or DICOM series):
  read (meddiff.io) -> per-image normalisation to [-1, 1] (min/max or percentiles, as
  `meddiff prepare`) -> 2D slices along --axis -> condition planes -> sampler -> inverse
  normalisation -> written in the input's format with the input's geometry.

Size: the network is fully convolutional, so slices run at their own size (padded with the
background value to a multiple of the network's downsampling factor and cropped back). We do
not resample to the training size: resampling would blur exactly the detail the model is to
restore, and change the physical pixel size the model sees less than resizing would.
Super-resolution: with --input-kind lowres (default) the input is the low-resolution
measurement and the output has factor x more pixels in-plane (spacing and affine scaled to
match); with --input-kind upsampled the input is already on the target grid.

Data consistency (--consistency, default none): "project" makes every x0 estimate of the sampler,
and so the output, agree with the measurement: for super-resolution its anti-aliased bicubic
downsampling equals the low-resolution input (with --input-kind upsampled: the downsampled input),
for inpainting the known pixels are kept; "repaint" (inpainting, ancestral sampler) is RePaint with
--resample U network calls per step.

VDM checkpoints (objective vdm) generate instead: --num N [--label L] [--steps S] writes
OUTPUT/grid.png and one file per sample (see meddiff.commands.vdm_sample). A VDM trained with
vdm.image_condition restores --input like a DDPM (same reading and writing; --sampler, --steps,
--samples, --seed; no --consistency).

Baselines go through the same reading, normalisation and writing; only the restoration differs:
a learned baseline's checkpoint (objective baseline: pix2pix, SRGAN, ...) predicts each slice
(--samples N draws its noise N times), and --method NAME instead of --checkpoint runs a classical
one: median or nlm (non-local means) for denoising, biharmonic for inpainting, bicubic or bilinear
for super-resolution (--sr-factor, default 4).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import re
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

from ..data.slices import from_slices, to_slices
from ..errors import InputError
from ..config import TaskConfig
from ..io import Volume, find_images, read_volume, write_volume
from ..io.outdir import check_output_dir, mark
from ..io.readers import ImageItem

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="restore images with a trained model (super-resolution, denoising, inpainting)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="model.safetensors, a checkpoint folder or a run folder")
    p.add_argument("--method", default=None, choices=sorted(CLASSICAL),
                   help="a classical baseline instead of --checkpoint: median, nlm (denoising), biharmonic (inpainting), "
                        "bicubic, bilinear (super-resolution)")
    p.add_argument("--input", type=Path, default=None,
                   help="an image file, a DICOM series folder, or a folder of them (required for DDPM checkpoints)")
    p.add_argument("--output", required=True, type=Path,
                   help="output folder: new or empty (or one meddiff wrote, with --overwrite); never an input folder")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty output folder, replacing earlier results; only a folder meddiff wrote")
    p.add_argument("--sampler", default=None, help="sampler (default: the checkpoint's sampler.name)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the checkpoint's sampler.steps)")
    p.add_argument("--eta", type=float, default=None, help="ddim only: noise scale in [0, 1], 0 = deterministic (default: the checkpoint's sampler.eta)")
    p.add_argument("--grid", choices=["auto", "uniform", "logsnr"], default=None,
                   help="ddim / dpm_solver_pp time grid (default: the checkpoint's sampler.grid; auto = log-SNR for dpm_solver_pp, uniform for ddim)")
    p.add_argument("--samples", type=int, default=1, help="samples per slice; >1 also writes the mean and per-pixel std")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise", choices=["independent", "shared"], default=None,
                   help="DDPM checkpoints: independent = each slice its own noise; shared = one noise for all slices of a "
                        "volume, so added detail lines up across slices (default: %s; meddiff.volume_noise, "
                        "benchmarks/volumes.py)" % DEFAULT_NOISE)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--precision", default=None, choices=["fp32", "bf16", "fp16", "auto"],
                   help="DDPM checkpoints: network precision (default auto: bf16 autocast where the CPU/GPU runs bf16 "
                        "natively, fp32 elsewhere; measured within 0.01 dB PSNR of fp32 on the shipped model)")
    p.add_argument("--sr-factor", type=float, default=None,
                   help="super-resolution: the factor of this input (default: the checkpoint's task.sr_factor; "
                        "a model trained with task.sr_factors accepts any of those)")
    p.add_argument("--axis", type=int, default=0, help="slice axis of 3D volumes ([Z,Y,X] order)")
    p.add_argument("--input-kind", choices=["lowres", "upsampled"], default="lowres",
                   help="super-resolution: is the input the low-resolution image (default) or already upsampled?")
    p.add_argument("--consistency", choices=["none", "project", "repaint"], default="none",
                   help="data consistency: project = SR projection onto the measurement / inpainting known-pixel "
                        "replacement at every step; repaint = RePaint (inpainting, ancestral sampler)")
    p.add_argument("--resample", type=int, default=1, metavar="U",
                   help="repaint only: network calls per step (U - 1 jumps back), 1 = plain replacement")
    p.add_argument("--mask", type=Path, default=None, help="inpainting: image of the same shape, nonzero = missing")
    p.add_argument("--clip-percentiles", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                   help="normalise with these percentiles (use the same as `meddiff prepare`)")
    p.add_argument("--format", choices=["same", "nifti", "png", "dicom"], default="same", help="output format")
    p.add_argument("--keep-patient-tags", action="store_true",
                   help="copy patient name/ID/birth date/sex into DICOM output and name output folders after the "
                        "patient ID (default: no patient data in tags or paths; outputs mirror the input's relative paths)")
    p.add_argument("--num", type=int, default=16, help="VDM checkpoints: number of images to generate (default 16)")
    p.add_argument("--label", default=None,
                   help="VDM class-conditional checkpoints: class name or index of every sample (default: cycle the classes)")
    p.add_argument("--strict-domain", action="store_true",
                   help="refuse (instead of warn about) an input that looks unlike the model's training data "
                        "(modality, pixel spacing, intensities, model-based score; see meddiff.domain)")
    p.add_argument("--max-memory", default=None, metavar="SIZE",
                   help="DDPM checkpoints: keep the estimated peak memory under SIZE (e.g. 3GB, 512MiB) by a smaller batch "
                        "or tiled sampling (default: what the process holds plus 60%% of the free RAM / GPU memory)")
    p.add_argument("--tile-size", type=int, default=None, help="DDPM checkpoints: sample in windows of this many pixels "
                   "(default: whole slices unless --max-memory needs windows)")
    p.add_argument("--tile-overlap", type=int, default=None, help="pixels shared by neighbouring windows (default: a quarter window)")
    p.add_argument("--compile", action="store_true",
                   help="DDPM checkpoints: torch.compile the network for sampling (inductor; the first call of each "
                        "batch/window shape compiles: 21-101 s, and measured no faster on a 2-core CPU)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


DEFAULT_NOISE = "shared"  # --noise default: same PSNR, lower through-plane error (README "Volumes", benchmarks/volumes.py)
CLASSICAL = {"median": "denoise", "nlm": "denoise", "biharmonic": "inpaint", "bicubic": "sr", "bilinear": "sr"}
_EXT = {"nifti": ".nii.gz", "png": ".png", "dicom": ".dcm", "dicom_series": "", "tiff": ".tif", "raster": ".png", "numpy": ".npy"}


def safe_folder_name(name: str) -> str:
    """A patient id as one folder name: characters other than letters, digits, '.', '_', '-'
    become '_' (a DICOM PatientID like '../x' or 'a/b' must not leave the output folder)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name.strip())
    return "unknown" if safe.strip(".") == "" else safe


def output_path(out_dir: Path, item: ImageItem, fmt: str, tag: str, *, input_root: Path | None = None,
                patient_folder: bool = False) -> Path:
    """Output file for one input and one product (restored / mean / std / sample_k):
    ``out_dir/<input's folder relative to input_root>/<input stem>_<tag><ext>``, so no patient data
    from the image's tags reaches a path; with ``patient_folder`` (``--keep-patient-tags``)
    ``out_dir/<patient id, made safe>/<input stem>_<tag><ext>``."""
    kind = item.kind if fmt == "same" else fmt
    stem = item.path.name
    for suf in (".nii.gz", ".nii", ".dcm", ".png", ".tif", ".tiff", ".npy", ".npz"):
        if stem.lower().endswith(suf):
            stem = stem[: -len(suf)]
            break
    ext = _EXT.get(kind, ".nii.gz")
    if patient_folder:
        return out_dir / safe_folder_name(item.patient_id) / f"{stem}_{tag}{ext}"
    rel = Path()
    if input_root is not None and input_root in item.path.parents:
        rel = item.path.relative_to(input_root).parent
    return out_dir / rel / f"{stem}_{tag}{ext}"


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


def sr_task(task: TaskConfig, factor: float | None) -> TaskConfig:
    """The task with --sr-factor applied (a warning if the model was not trained for it)."""
    if factor is None:
        return task
    if task.kind != "sr":
        raise InputError(f"--sr-factor applies to super-resolution checkpoints, this one is {task.kind!r}")
    if not factor > 1:
        raise InputError(f"--sr-factor {factor}: expected a factor > 1")
    trained = task.sr_factors or (task.sr_factor,)
    if not any(abs(factor - f) < 1e-6 * f for f in trained):
        log.warning("--sr-factor %g: this model was trained for %s only", factor, ", ".join(f"x{f:g}" for f in trained))
    return dataclasses.replace(task, sr_factor=factor)


def _not_for(args: argparse.Namespace, what: str, keys: tuple[str, ...]) -> None:
    for key in keys:
        if getattr(args, key) not in (None, "none"):
            raise InputError(f"--{key.replace('_', '-')} applies to DDPM checkpoints only, not to {what}")


def ddpm_restorer(args: argparse.Namespace, device):
    """(task, restore(planes, lowres, name) -> [S, N, 1, H, W], description) of a DDPM checkpoint: its sampler."""
    from ..inference import SAMPLERS, restore, sampler_options
    from ..samplers.consistency import check_request, measurement_for, sr_consistency_error
    from ..train.checkpoint import load_model

    cfg, net, denoiser = load_model(args.checkpoint, device=device)
    denoiser.precision = args.precision or "auto"
    if args.compile:
        from ..diffusion.denoiser import compile_network

        denoiser.net = compile_network(denoiser.net)
    if cfg.model.spatial_dims == 3:
        raise InputError(f"{args.checkpoint}: a 3D model (model.spatial_dims 3); meddiff sample restores with 2D and 2.5D "
                         "models only (3D sliding-window sampling is not built yet, README \"Volumes\")")
    if cfg.task.sr_axis == "through":
        raise InputError(f"{args.checkpoint}: a thick-slice (task.sr_axis through) model; meddiff sample does not restore "
                         "thick-slice series yet (README \"Volumes\")")
    context = cfg.task.context_slices  # 2.5D: restore_files builds one plane per slice, run_sampler adds the neighbours
    task = sr_task(dataclasses.replace(cfg.task, context_slices=0), args.sr_factor)
    sampler = args.sampler or cfg.sampler.name
    steps = args.steps if args.steps is not None else cfg.sampler.steps
    if sampler not in SAMPLERS:
        raise InputError(f"--sampler {sampler}: expected one of {sorted(SAMPLERS)}")
    if args.eta is not None and sampler != "ddim":
        raise InputError(f"--eta applies to --sampler ddim only, not {sampler}")
    eta = cfg.sampler.eta if args.eta is None else args.eta
    if sampler == "ddim" and not 0 <= eta <= 1:
        raise InputError(f"--eta {eta}: expected a number in [0, 1]")
    grid = args.grid or cfg.sampler.grid
    if args.grid is not None and sampler not in ("ddim", "dpm_solver_pp"):
        raise InputError(f"--grid applies to --sampler ddim or dpm_solver_pp, not {sampler}")
    options = sampler_options(sampler, cfg.diffusion.variance, eta, grid)
    if not 1 <= steps <= cfg.diffusion.timesteps:
        raise InputError(f"--steps {steps}: expected 1..{cfg.diffusion.timesteps}")
    check_request(task.kind, args.consistency, args.resample)
    if args.consistency == "repaint" and sampler != "ancestral":
        raise InputError(f"--consistency repaint needs --sampler ancestral, not {sampler}")

    def run_sampler(planes: torch.Tensor, lowres: torch.Tensor | None, name: Path) -> torch.Tensor:
        measured = measurement_for(task.kind, args.consistency, planes, factor=task.sr_factor if task.kind == "sr" else None,
                                   lowres=lowres, resample=args.resample)
        if context:
            from ..data.volume_dataset import context_planes
            planes = context_planes(planes, context)
        out = restore(denoiser, planes, sampler=sampler, steps=steps, samples=args.samples, seed=args.seed,
                      batch_size=args.batch_size, device=device, progress=getattr(args, "progress", not args.no_progress),
                      consistency=measured, noise=args.noise or DEFAULT_NOISE, **memory_options(args), **options)
        if measured is not None and measured.lowres is not None:
            err = max(float(sr_consistency_error(o, measured.lowres).max()) for o in out)
            log.info("%s: largest RMS |A x - y| over slices and samples %.2e ([-1, 1] units)", name, err)
        return out

    describe = f"{sampler} {steps} steps, seed {args.seed}, {args.noise or DEFAULT_NOISE} noise" + ("" if args.consistency == "none" else f", consistency {args.consistency}")
    if task.kind == "sr" and not context:  # the domain check of meddiff.domain (restore_files runs it)
        from ..domain import read_card
        from ..train.checkpoint import resolve_model_file

        run_sampler.domain = (denoiser, read_card(resolve_model_file(args.checkpoint)), task.sr_factor)  # type: ignore[attr-defined]
    return task, run_sampler, describe


def memory_options(args: argparse.Namespace) -> dict:
    """restore()'s max_memory / tile_size / tile_overlap from the command line."""
    from ..memory import parse_size

    try:
        limit = None if args.max_memory is None else parse_size(args.max_memory)
    except ValueError as e:
        raise InputError(f"--max-memory: {e}") from None
    for key in ("tile_size", "tile_overlap"):
        value = getattr(args, key)
        if value is not None and value < (1 if key == "tile_size" else 0):
            raise InputError(f"--{key.replace('_', '-')} {value}: expected a {'positive' if key == 'tile_size' else 'non-negative'} number of pixels")
    return {"max_memory": limit, "tile_size": args.tile_size, "tile_overlap": args.tile_overlap}


def baseline_restorer(args: argparse.Namespace, device):
    """(task, restore, description) of a learned baseline's checkpoint: its prediction per slice."""
    from ..baselines.registry import load_baseline, restore_baseline

    _not_for(args, "learned baselines", ("sampler", "steps", "eta", "grid", "precision", "consistency", "noise"))
    cfg, model = load_baseline(args.checkpoint, device=device)

    def predict(planes: torch.Tensor, lowres: torch.Tensor | None, name: Path) -> torch.Tensor:
        return restore_baseline(model, planes, samples=args.samples, seed=args.seed, batch_size=args.batch_size, device=device)

    return sr_task(cfg.task, args.sr_factor), predict, f"{cfg.baseline.name} baseline, seed {args.seed}"


def classical_restorer(args: argparse.Namespace):
    """(task, restore, description) of a classical baseline (--method): deterministic, one sample."""
    from ..baselines.classical import classical_restore

    _not_for(args, f"--method {args.method}", ("sampler", "steps", "eta", "grid", "precision", "consistency", "noise"))
    if args.samples != 1:
        raise InputError(f"--samples {args.samples}: --method {args.method} is deterministic, expected 1")
    kind = CLASSICAL[args.method]
    if args.sr_factor is not None and kind != "sr":
        raise InputError(f"--sr-factor applies to --method bicubic or bilinear, not {args.method}")
    if args.sr_factor is not None and not args.sr_factor > 1:
        raise InputError(f"--sr-factor {args.sr_factor}: expected a factor > 1")
    task = TaskConfig(kind=kind, sr_factor=args.sr_factor or 4.0,
                      sr_upsample=args.method if kind == "sr" else "bicubic")

    def apply(planes: torch.Tensor, lowres: torch.Tensor | None, name: Path) -> torch.Tensor:
        if kind == "sr":  # the shared path already upsampled the input with this method
            return planes[None, :, :1].clamp(-1, 1)
        return classical_restore(args.method, planes, planes[:, 1:] if kind == "inpaint" else torch.ones_like(planes))

    return task, apply, args.method


def run(args: argparse.Namespace) -> int:
    from ..baselines.registry import is_baseline_checkpoint
    from ..io.atomic import check_writable_dir
    from ..train.distributed import pick_device
    from .vdm_sample import is_vdm_checkpoint
    from .vdm_sample import run as run_vdm

    if args.method is not None and args.checkpoint is not None:
        raise InputError(f"give --checkpoint or --method, not both (got --method {args.method})")
    if args.method is None and args.checkpoint is None:
        raise InputError(f"give --checkpoint (a trained model) or --method (one of {', '.join(sorted(CLASSICAL))})")
    if args.checkpoint is not None and is_vdm_checkpoint(args.checkpoint):
        claim_output(args)
        return run_vdm(args)
    if args.input is None:
        raise InputError("--input is required to restore images")
    if args.label is not None:
        raise InputError("--label applies to class-conditional VDM checkpoints only")
    if args.samples < 1:
        raise InputError(f"--samples {args.samples}: expected >= 1")
    if args.batch_size < 1:
        raise InputError(f"--batch-size {args.batch_size}: expected >= 1")
    check_writable_dir(args.output)
    device = pick_device(args.device)
    if args.method is not None:
        task, restore_slices, describe = classical_restorer(args)
    elif is_baseline_checkpoint(args.checkpoint):
        task, restore_slices, describe = baseline_restorer(args, device)
    else:
        task, restore_slices, describe = ddpm_restorer(args, device)
    claim_output(args)
    return restore_files(args, task, restore_slices, describe)


def _unique_suffix(args: argparse.Namespace, item: ImageItem, used: set[Path]) -> str:
    """'' or '_2', '_3', ...: so that inputs sharing a path (several DICOM series in one folder) get
    distinct outputs; records the chosen name in `used`."""
    k = 1
    while True:
        suffix = "" if k == 1 else f"_{k}"
        key = output_path(args.output, item, args.format, suffix, input_root=args.input, patient_folder=args.keep_patient_tags)
        if key not in used:
            used.add(key)
            return suffix
        k += 1


def claim_output(args: argparse.Namespace) -> None:
    """Refuse an output folder that is or holds an input, or a non-empty one without --overwrite
    (and then only one meddiff wrote). Writes nothing: `mark` it just before the first output."""
    inputs = [p for p in (getattr(args, "input", None), getattr(args, "mask", None)) if p is not None]
    check_output_dir(args.output, inputs, overwrite=getattr(args, "overwrite", False))


def run_provenance(args: argparse.Namespace, describe: str) -> dict:
    """What made this run's outputs (recorded by the writers beside and, for DICOM, inside each output)."""
    from ..io.provenance import file_sha256
    from ..train.checkpoint import resolve_model_file

    sha = None
    if args.checkpoint is not None:
        try:
            sha = file_sha256(resolve_model_file(args.checkpoint))
        except Exception:  # a baseline/VDM layout: the command line still names the checkpoint
            sha = file_sha256(args.checkpoint) if Path(args.checkpoint).is_file() else None
    return {"checkpoint": None if args.checkpoint is None else str(args.checkpoint), "checkpoint_sha256": sha,
            "method": args.method, "restoration": describe, "sampler": args.sampler, "steps": args.steps,
            "seed": args.seed, "precision": args.precision, "samples": args.samples,
            **({"command": shlex.join(args.argv)} if hasattr(args, "argv") else {})}


def restore_files(args: argparse.Namespace, task: TaskConfig, restore_slices, describe: str) -> int:
    """Read each input, normalise, build the condition planes, call restore_slices(planes, lowres, name)
    -> [S, N, 1, H, W], undo the normalisation and write in the input's format (the path shared by
    DDPM checkpoints, learned and classical baselines)."""
    from ..data.degrade import SuperResolution, build_degradation
    from ..data.normalise import Normalisation
    from ..inference import summarise

    if args.mask is not None and task.kind != "inpaint":
        raise InputError(f"--mask {args.mask}: this model does {task.kind}, not inpainting; a mask applies to inpainting models only")
    if task.kind == "inpaint" and args.mask is None:
        what = f"--method {args.method}" if args.method else "this checkpoint"
        raise InputError(f"{what} inpaints: give --mask FILE (nonzero where pixels are missing)")
    if not args.input.exists():
        raise InputError(f"--input {args.input}: no such file or folder; expected an image file, a DICOM series folder or a folder of images")
    items = [args.input] if args.input.is_file() else find_images(args.input)
    if not items:
        raise InputError(f"{args.input}: no readable image found")
    from ..progress import Progress  # one bar over every file, in network calls

    args.progress = Progress(not args.no_progress, files=len(items))
    slices_done = 0
    deg = build_degradation(task)
    provenance = run_provenance(args, describe)
    written: list[Path] = []
    used: set[Path] = set()  # two series in one folder must not write the same output
    reports: list = []  # domain reports (meddiff.domain) of DDPM super-resolution inputs
    for item in items:
        vol = read_volume(item)
        if not isinstance(item, ImageItem):
            kind = "nifti" if str(item).lower().endswith((".nii", ".nii.gz")) else (
                "dicom" if str(item).lower().endswith(".dcm") else "tiff" if str(item).lower().endswith((".tif", ".tiff"))
                else "raster" if str(item).lower().endswith(".png") else "numpy")
            item = ImageItem(path=Path(item), patient_id=vol.patient_id, kind=kind, files=(Path(item),))
        norm = Normalisation.from_volume(vol, percentiles=tuple(args.clip_percentiles) if args.clip_percentiles else None)
        x = torch.from_numpy(to_slices(norm.forward(vol.array), args.axis).copy()).float()[:, None]
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
        planes = deg.model_condition(cond, mask)
        lowres = x if task.kind == "sr" and args.input_kind == "lowres" else None
        domain = getattr(restore_slices, "domain", None)
        report = None if domain is None else domain_precheck(args, domain, item.path, vol, x, lowres is not None)
        out = restore_slices(planes, lowres, item.path)
        if report is not None:
            domain_postcheck(args, domain, report, out, x if lowres is not None else None)
            reports.append(report)
        slices_done += planes.shape[0]
        args.progress.slices_done(slices_done - args.progress.slices)  # restorers without the bar
        if task.kind == "inpaint":  # known pixels are measurements: keep them exactly
            out = out * mask + cond * (1 - mask)
        mean, std = summarise(out)
        out_shape = from_slices(mean[:, 0].numpy(), vol.ndim, args.axis).shape
        spacing, affine = (vol.spacing, vol.affine) if out_shape == vol.shape else scaled_geometry(vol, task.sr_factor, args.axis, out_shape)

        flag = "" if report is None or report.in_domain else "; OUT OF THE MODEL'S DOMAIN: " + "; ".join(report.reasons)

        def volume_of(arr: torch.Tensor, what: str) -> Volume:
            a = from_slices(arr[:, 0].numpy(), vol.ndim, args.axis).astype(np.float32)
            return Volume(a, spacing, affine, vol.patient_id, vol.source,
                          {**vol.meta, "derived": f"meddiff {task.kind} {what}, {describe}{flag}"})

        products = {"restored": norm.inverse(mean)} if args.samples == 1 else {"mean": norm.inverse(mean), "std": std * norm.scale()}
        if args.samples > 1:
            products.update({f"sample{s}": norm.inverse(out[s]) for s in range(args.samples)})
            scale = calibrated_error_scale(domain, args.samples)
            if scale:  # the card's calibration: the expected error of the mean, in the image's units
                products["uncertainty"] = std * scale * norm.scale()
        if not written:
            mark(args.output, "sample")
        suffix = _unique_suffix(args, item, used)
        for tag, arr in products.items():
            path = output_path(args.output, item, args.format, f"{tag}{suffix}", input_root=args.input,
                               patient_folder=args.keep_patient_tags)
            v = volume_of(arr, tag)
            ref = vol if v.shape == vol.shape else None
            written += write_volume(v, path, reference=ref, synthetic=True, keep_patient_tags=args.keep_patient_tags,
                                    description=f"meddiff {task.kind} ({tag}){flag}", overwrite=True, provenance=provenance)
        log.info("%s -> %s", item.path, path.parent)
    if reports:
        write_domain_reports(args.output, reports)
    args.progress.close()
    print(f"wrote {len(written)} file(s) under {args.output}: {args.progress.summary()}")
    return 0


def domain_precheck(args: argparse.Namespace, domain, name: Path, vol: Volume, slices: torch.Tensor, is_lowres: bool):
    """meddiff.domain.check_input on one input before sampling: warn, or refuse with --strict-domain."""
    from ..data.slices import in_plane_spacing
    from ..domain import check_input

    denoiser, card, factor = domain
    spacing = None
    src = str(vol.source).lower()
    known = vol.meta.get("modality") or src.endswith((".nii", ".nii.gz"))  # PNG/TIFF/NPY carry no real spacing
    if known and len(vol.spacing) >= 2:
        spacing = in_plane_spacing(vol.spacing, args.axis) if vol.ndim == 3 else vol.spacing
        spacing = tuple(float(s) * (1.0 if is_lowres else factor) for s in spacing)  # as the low-resolution input's
    small = min(slices.shape[-2:]) < 32
    report = check_input(str(name), slices if is_lowres else _lowres_of(slices, factor), vol.meta.get("modality"),
                         spacing, factor, denoiser, card, score=not small)
    _complain(args, report, before=True)
    return report


def calibrated_error_scale(domain, samples: int) -> float:
    """std -> expected |mean - truth| factor from the model card (0 = the model has no calibration)."""
    from ..metrics.calibration import error_std_factor

    card = None if domain is None else domain[1]
    if card is None or not card.std_scale:
        return 0.0
    return float(card.std_scale * error_std_factor(samples))


def _lowres_of(x: torch.Tensor, factor: float) -> torch.Tensor:
    from ..data.degrade import SuperResolution

    return SuperResolution(factor).downsample(x)


def domain_postcheck(args: argparse.Namespace, domain, report, out: torch.Tensor, lowres: torch.Tensor | None) -> None:
    """The consistency ratio of the restored mean with the measurement (meddiff.domain)."""
    from ..domain import SCORE_LIMIT, consistency_ratio

    if lowres is None:
        return
    report.consistency = consistency_ratio(out.mean(0), lowres, domain[2])
    if report.consistency > SCORE_LIMIT:
        report.reasons.append(f"the output agrees with the measured image less than bicubic does (consistency ratio "
                              f"{report.consistency:.2f} > {SCORE_LIMIT:g}): the model changed what was measured")
        _complain(args, report, before=False)


def _complain(args: argparse.Namespace, report, before: bool) -> None:
    if report.in_domain:
        return
    msg = f"{report.source} looks unlike the model's training data: " + "; ".join(report.reasons)
    if args.strict_domain:
        raise InputError(msg + " (--strict-domain: refused; drop the flag to restore it with this warning)")
    log.warning("%s", msg)
    if before:
        print(f"meddiff sample: warning: {msg}", file=sys.stderr)


def write_domain_reports(out: Path, reports: list) -> None:
    """OUT/domain_check.json: each input's domain findings (empty reasons = in domain)."""
    import json
    from dataclasses import asdict

    from ..io.atomic import atomic_write_text

    atomic_write_text(out / "domain_check.json", json.dumps([asdict(r) for r in reports], indent=1) + "\n")
