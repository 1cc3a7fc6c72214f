"""The restore pipeline on files: read each input (meddiff.io), normalise per image to [-1, 1], cut
2D slices along an axis, build the condition planes of the task, restore the slices (any
`restore_slices(planes, lowres, name) -> [S, N, 1, H, W]` of a Restorer: a DDPM's sampler, a VDM's, a
learned or classical baseline, see restore.restorers), undo the normalisation and write in the input's format
with the input's geometry (super-resolution: spacing and affine scaled to the finer grid).

Products per input: ``restored`` (one sample), or ``mean``, ``std`` and ``sample<k>`` (several).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..config import TaskConfig
from ..data.degrade import SuperResolution, build_degradation
from ..data.normalise import Normalisation
from ..data.slices import from_slices, to_slices
from ..errors import FieldError, InputError
from ..samplers.run import summarise
from ..io import Volume, find_images, read_volume, write_volume
from ..io.readers import ImageItem
from ..io.phi import public_command, public_relpath
from ..io.outdir import check_output_dir, mark
from ..io.suffixes import strip_image_suffix
from .resume import DoneLog, run_key
from ..checkpointing import resolve_model_file
from ..data.mask_files import MaskSpec, mask_for
from ..data.thick import thick_slices, upsample_axis
from ..domain import DomainReport
from ..domain.check import calibrated_error_scale, domain_exit_status, domain_postcheck, domain_precheck, domain_summary
from ..io.atomic import atomic_write_text
from ..io.provenance import file_sha256
from ..samplers.memory import available_bytes
from ..samplers.progress import Progress
from ..uncertainty.maps import interval_maps

log = logging.getLogger(__name__)

_EXT = {"nifti": ".nii.gz", "png": ".png", "dicom": ".dcm", "dicom_series": "", "tiff": ".tif", "raster": ".png", "numpy": ".npy"}
# restore_slices(planes, lowres, name, bar) -> [S, N, 1, H, W]; bar: the run's Progress (meddiff.samplers.progress)
RestoreSlices = Callable[[torch.Tensor, "torch.Tensor | None", Path, Any], torch.Tensor]


@dataclass(frozen=True)
class Request:
    """What to restore and how (the fields of `meddiff sample`; None = the checkpoint's setting).

    checkpoint: a shipped model's name, a model file / checkpoint folder / run folder (or the
    checkpointing.ModelSource it resolves to, restore.restorers.located), or method: a classical baseline;
    input: an image file, a DICOM series folder or a folder of them; output: the output folder."""

    output: Path
    input: Path | None = None
    checkpoint: Any = None  # str | Path | ModelSource
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
    mask: Path | None = None  # a mask file for every input, or a folder of masks matched by name (meddiff.data.mask_files)
    mask_label: int | None = None  # holes = the voxels of this label (a label map / DICOM SEG); None = nonzero
    mask_dilate: float = 0.0  # grow the holes by this distance in mm
    clip_percentiles: tuple[float, float] | None = None
    format: str = "same"
    keep_patient_tags: bool = False
    progress: bool = True
    overwrite: bool = False  # write into a non-empty output folder meddiff wrote (meddiff.io.outdir)
    strict_domain: bool = False  # refuse, not warn about, inputs unlike the training data (meddiff.domain)
    max_memory: str | None = None  # e.g. "3GB": lower the batch or tile to stay under it (meddiff.samplers.tiling)
    tile_size: int | None = None
    tile_overlap: int | None = None
    compile: bool = False
    noise: str | None = None  # "shared" (one noise for every slice of a volume; the default) or "independent"
    allow_rgb: bool = False  # colour inputs converted to gray (BT.601) instead of refused
    weights: str = "ema"  # "ema" or "raw" (the training weights of a checkpoint folder; meddiff.train.weights)
    interval: float | None = None  # --interval P: also write <name>_lower / <name>_upper (meddiff.uncertainty.maps)
    argv: tuple[str, ...] = ()  # the command line, recorded as provenance

    @classmethod
    def from_namespace(cls, args: Any) -> "Request":
        """The request of parsed `meddiff sample` arguments (--no-progress -> progress=False)."""
        values = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name) and f.name != "argv"}
        values["progress"] = not getattr(args, "no_progress", False)
        return cls(**values, argv=tuple(getattr(args, "argv", ()) or ()))


class Written(list):
    """The files a run wrote (a list of Path), with `summary`: slices, network calls, seconds, peak memory."""

    summary: str = ""
    domain_summary: str = ""  # the domain check's warnings and verdict, printed once after the bar (meddiff.domain.check)
    status: int = 0  # the exit status the run asks for (meddiff.domain.check.domain_exit_status)


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
    stem = strip_image_suffix(item.path.name)
    ext = _EXT.get(kind, ".nii.gz")
    if kind == "numpy" and item.path.suffix.lower() == ".npz":
        ext = ".npz"  # keeps the spacing an .npz carries
    if patient_folder:
        return out_dir / safe_folder_name(item.patient_id) / f"{stem}_{tag}{ext}"
    # no patient data in names: folders relative to --input, each pseudonymised (meddiff.io.phi)
    rel = public_relpath(item.path, input_root, is_dir=item.kind == "dicom_series")
    if item.kind == "dicom_series":
        stem = rel.name
    return out_dir / rel.parent / f"{stem}_{tag}{ext}"


def unique_suffix(args: Request, item: ImageItem, used: set[Path]) -> str:
    """'' or '_2', '_3', ...: inputs sharing a path (several DICOM series in one folder) get distinct
    outputs; records the chosen name in `used`."""
    k = 1
    while True:
        suffix = "" if k == 1 else f"_{k}"
        key = output_path(args.output, item, args.format, suffix, input_root=args.input, patient_folder=args.keep_patient_tags)
        if key not in used:
            used.add(key)
            return suffix
        k += 1


def run_provenance(args: Request, restorer=None) -> dict:
    """What made this run's outputs (recorded by the writers beside and, for DICOM, inside each output).

    sampler, steps and precision are the ones the run resolved (the restorer's samplers.registry.SamplingSpec:
    the checkpoint's stored defaults under the request's overrides), never None where defaults applied; a
    restorer without a sampler (a baseline) records the request's, None."""
    import shlex

    sha = None
    if args.checkpoint is not None:
        try:
            sha = file_sha256(resolve_model_file(args.checkpoint))
        except Exception:  # a baseline/VDM layout: the command line still names the checkpoint
            sha = file_sha256(args.checkpoint) if Path(args.checkpoint).is_file() else None
    spec = getattr(restorer, "sampling", None)
    sampling = ({"sampler": args.sampler, "steps": args.steps, "precision": args.precision} if spec is None else
                {"sampler": spec.name, "steps": spec.steps, "precision": spec.precision})
    return {"checkpoint": None if args.checkpoint is None else str(args.checkpoint), "checkpoint_sha256": sha,
            "method": args.method, "restoration": getattr(restorer, "describe", ""), **sampling,
            "seed": args.seed, "samples": args.samples,
            **({"command": shlex.join(args.argv) if args.keep_patient_tags else public_command(args.argv)}
               if args.argv else {})}


def scaled_geometry(vol: Volume, factor: float, axis: int, shape: tuple[int, ...]) -> tuple[tuple[float, ...], np.ndarray]:
    """Spacing and affine of the super-resolved grid `shape`: every axis whose length changed (the
    in-plane axes of in-plane SR; the slice axis of thick-slice SR) gets its spacing scaled by
    old / new length (`factor` and `axis` are kept for the callers; the shapes say it all).

    Voxel centres: new index j' sits at old continuous index (j' + 0.5) / f - 0.5, so the field
    of view is unchanged (a thick slice's centre is the centre of the thin slices it averaged).
    """
    scale = np.array([vol.shape[a] / shape[a] for a in range(vol.ndim)], float)
    m = np.eye(4)
    for a in range(vol.ndim):
        m[a, a] = scale[a]
        m[a, 3] = (scale[a] - 1) / 2
    spacing = tuple(float(s * scale[a]) for a, s in enumerate(vol.spacing))
    return spacing, np.asarray(vol.affine, float) @ m


def restore_files(args: Request, restorer) -> Written:
    """Read each input, normalise, build the condition planes, call restorer.restore_slices(planes, lowres, name, bar)
    -> [S, N, 1, H, W], undo the normalisation and write in the input's format (the path shared by
    DDPM and VDM checkpoints, learned and classical baselines). Returns the files written.

    The output folder must not be or hold an input, and must be new, empty or (with overwrite) one
    meddiff wrote (meddiff.io.outdir); it is marked as meddiff's just before the first write."""
    task, restore_slices, describe = restorer.task, restorer.restore_slices, restorer.describe
    if args.mask is not None and task.kind != "inpaint":
        raise FieldError("mask", args.mask, f"this model does {task.kind}, not inpainting; a mask applies to inpainting models only")
    if args.mask is None and (args.mask_label is not None or args.mask_dilate):
        raise FieldError("mask_label", None, "/ {mask_dilate} describe a mask: give {mask} FILE_OR_DIR too")
    if task.kind == "inpaint" and args.mask is None:
        what = f"{{method}} {args.method}" if args.method else "this checkpoint"
        raise FieldError("mask", text=f"{what} inpaints: give {{mask}} FILE (nonzero where pixels are missing) "
                                      "or {mask} DIR (a mask per input)")
    if args.input is None:
        raise InputError("--input is required to restore images")
    if args.interval is not None and getattr(restorer, "interval", None) is None:
        raise FieldError("interval", f"{args.interval:g}", "needs a super-resolution DDPM checkpoint with a stored interval calibration")
    provenance = run_provenance(args, restorer)
    key = run_key(args, provenance["checkpoint_sha256"])
    check_output_dir(args.output, [p for p in (args.input, args.mask) if p is not None], overwrite=args.overwrite,
                     verb="sample", resume=key)
    items = [args.input] if args.input.is_file() else find_images(args.input)
    if not items:
        raise InputError(f"{args.input}: no readable image found")
    run = Run(args, task, build_degradation(task), restore_slices, describe, provenance,
              Progress(args.progress, files=len(items)), domain_check=restorer.domain_check,
              interval=getattr(restorer, "interval", None), key=key)
    done = DoneLog(args.output, key, resume=not args.overwrite)
    written, skipped = Written(), 0
    for item in items:
        files = restore_or_skip(run, item, done)
        skipped += files is None
        written += files or []
    run.bar.close()
    if run.reports:
        write_domain_reports(args.output, run.reports)
    mark(args.output, "sample", complete=True, run=key)
    done.close()
    written.summary = run.bar.summary() + (f"; resumed an unfinished run: {skipped} of {len(items)} inputs were "
                                           "already done and kept" if skipped else "")
    written.domain_summary, written.status = domain_summary(run.reports), domain_exit_status(args.strict_domain, run.reports)
    return written


@dataclass
class Run:
    """One restore run's shared state: request, task, degradation, restorer, provenance, progress bar,
    the output names used so far, the domain reports and the restorer's domain check (meddiff.domain)."""

    args: Request
    task: TaskConfig
    deg: Any
    restore_slices: RestoreSlices
    describe: str
    provenance: dict
    bar: Any
    used: set = field(default_factory=set)
    reports: list = field(default_factory=list)
    domain_check: Any = None  # restore.restorers.DomainCheck, or None: not checked
    interval: Any = None  # the restorer's --interval calibration (meddiff.uncertainty.maps), or None
    key: str = ""  # restore.resume.run_key of a `meddiff sample` run that can be resumed ("" for archive units)


def read_item(item: ImageItem | Path, allow_rgb: bool = False) -> tuple[Volume, ImageItem]:
    """The volume of one input and its ImageItem (a plain file path gets one, its kind from the suffix)."""
    vol = read_volume(item, allow_rgb_to_gray=allow_rgb)
    if not isinstance(item, ImageItem):
        name = str(item).lower()
        kind = "nifti" if name.endswith((".nii", ".nii.gz")) else (
            "dicom" if name.endswith(".dcm") else "tiff" if name.endswith((".tif", ".tiff"))
            else "raster" if name.endswith(".png") else "numpy")
        item = ImageItem(path=Path(item), patient_id=vol.patient_id, kind=kind, files=(Path(item),))
    return vol, item


def condition_planes(args: Request, task: TaskConfig, deg: Any, vol: Volume, item: ImageItem, x: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(cond, mask, model condition planes, low-resolution slices or None) of the normalised slices x
    [N, 1, h, w]: super-resolution upsamples a low-resolution input, inpainting reads --mask."""
    if task.kind == "sr" and task.sr_axis == "through":  # thick slices along the slice axis (meddiff.data.thick)
        return _thick_planes(args, task, x)
    if task.kind == "sr" and args.input_kind == "lowres":
        assert isinstance(deg, SuperResolution)
        size = (round(x.shape[-2] * task.sr_factor), round(x.shape[-1] * task.sr_factor))
        cond = deg.upsample(x, size)
        mask = torch.ones_like(cond)
    elif task.kind == "inpaint":
        holes = mask_for(MaskSpec(args.mask, args.mask_label, args.mask_dilate), item, vol,
                         args.input if args.input is not None and args.input.is_dir() else None)
        mask = torch.from_numpy(to_slices(holes.astype(np.float32), args.axis).copy())[:, None]
        cond = x * (1 - mask)
    else:
        cond, mask = x, torch.ones_like(x)
    lowres = x if task.kind == "sr" and args.input_kind == "lowres" else None
    return cond, mask, deg.model_condition(cond, mask), lowres


def _thick_planes(args: Request, task: TaskConfig, x: torch.Tensor):
    """Thick-slice SR: the N slices x [N, 1, h, w] (lowres input) are thick slices, interpolated
    (cubic) to N * factor thin slices; an "upsampled" input is already on the thin grid."""
    f = int(task.sr_factor)
    if args.input_kind == "lowres":
        cond = upsample_axis(x, x.shape[0] * f, 0, "cubic").clamp(-1.0, 1.0)
        return cond, torch.ones_like(cond), cond, x
    if x.shape[0] % f:
        raise FieldError("input_kind", "upsampled", f"{x.shape[0]} slices along {{axis}} {args.axis} is not a multiple "
                         f"of the thick-slice factor {f}")
    return x, torch.ones_like(x), x, thick_slices(x, f, 0)


def check_samples_memory(samples: int, planes: torch.Tensor, source: Path) -> None:
    """--samples S keeps S restored copies of every slice (then mean, std and each sample are written): refuse,
    before sampling, a request that cannot fit in the memory this machine has free."""
    n, _, h, w = planes.shape
    need = samples * n * h * w * 4 * 3  # the samples, their float64 summaries and one written copy
    free = available_bytes(torch.device("cpu"))  # the samples are gathered on the CPU
    if need > free:
        raise FieldError("samples", samples, f"the samples of {source} ({n} slices of {h}x{w}) need about "
                         f"{need / 2**30:.1f} GiB but {free / 2**30:.1f} GiB of memory is free; expected at most "
                         f"{max(1, int(samples * free / need))} samples")


def restore_or_skip(run: Run, item: ImageItem | Path, done: DoneLog) -> list[Path] | None:
    """restore_file, recorded in the run's DoneLog; None for an input an unfinished run of the same key already
    finished (its output names are taken again, in order, and its domain report kept)."""
    args = run.args
    path = item.path if isinstance(item, ImageItem) else Path(item)
    name = public_relpath(path, args.input if args.input.is_dir() else None,
                          is_dir=isinstance(item, ImageItem) and item.kind == "dicom_series").as_posix()
    entry = done.finished(name)
    if entry is not None:
        if isinstance(item, ImageItem):
            unique_suffix(args, item, run.used)
        if entry["report"] is not None:
            run.reports.append(DomainReport(**entry["report"]))
        return None
    before = len(run.reports)
    files = restore_file(run, item)
    report = run.reports[-1] if len(run.reports) > before else None
    if report is not None and not args.keep_patient_tags:
        report.source = name  # domain_check.json names the input as the outputs do (folders pseudonymised)
    done.record(name, files, report)
    return files


def restore_file(run: Run, item: ImageItem | Path) -> list[Path]:
    """One input through the pipeline (restore_files); returns the files written."""
    vol, item = read_item(item, run.args.allow_rgb)
    out, norm, report, extra = restore_volume(run, vol, item)
    written = write_products(run, vol, item, norm, out, report, extra)
    log.info("%s -> %s", item.path, written[0].parent if written else run.args.output)
    return written


def restore_volume(run: Run, vol: Volume, item: ImageItem) -> tuple[torch.Tensor, Normalisation, Any, dict | None]:
    """The restoration of one read input: (out [S, N, 1, H, W] in normalised units, its normalisation,
    its domain report or None, --interval's {tag: (map, sentence)} or None); normalise, slice, condition
    planes, domain check, restore_slices."""
    args, task = run.args, run.task
    norm = Normalisation.from_volume(vol, percentiles=tuple(args.clip_percentiles) if args.clip_percentiles else None)
    x = torch.from_numpy(to_slices(norm.forward(vol.array), args.axis).copy()).float()[:, None]
    cond, mask, planes, lowres = condition_planes(args, task, run.deg, vol, item, x)
    check_samples_memory(args.samples, planes, item.path)
    domain = run.domain_check
    report = None if domain is None else domain_precheck(args, domain, item.path, vol, x, lowres is not None)
    before = run.bar.slices
    out = run.restore_slices(planes, lowres, item.path, run.bar)
    run.bar.slices_done(planes.shape[0] - (run.bar.slices - before))  # restorers that do not count slices
    if report is not None:
        domain_postcheck(args, domain, report, out, x if lowres is not None else None)
        run.reports.append(report)
    if task.kind == "inpaint":  # known pixels are measurements: keep them exactly
        out = out * mask + cond * (1 - mask)
    extra = None
    if args.interval is not None:  # --interval P: lower / upper maps (meddiff.uncertainty)

        extra = interval_maps(run.interval, args.interval, out, cond, lowres)
    return out, norm, report, extra


def products_of(run: Run, norm: Normalisation, out: torch.Tensor) -> dict[str, torch.Tensor]:
    """The products of out [S, N, 1, H, W] (normalised units) as slices [N, 1, H, W] in the image's units:
    restored (one sample), or mean, std, sample<k> and, with a calibrated model, uncertainty."""
    args = run.args
    mean, std = summarise(out)
    products = {"restored": norm.inverse(mean)} if args.samples == 1 else {"mean": norm.inverse(mean), "std": std * norm.scale()}
    if args.samples > 1:
        products.update({f"sample{s}": norm.inverse(out[s]) for s in range(args.samples)})
        scale = calibrated_error_scale(run.domain_check, args.samples)
        if scale:  # the model card's calibration: the expected error of the mean, in the image's units
            products["uncertainty"] = std * scale * norm.scale()
    return products


def write_products(run: Run, vol: Volume, item: ImageItem, norm: Normalisation, out: torch.Tensor, report=None,
                   extra: dict | None = None) -> list[Path]:
    """Write the restored / mean / std / sample<k> (and, with a calibrated model, uncertainty)
    volumes of out [S, N, 1, H, W] (normalised units); extra: {tag: (map [N, 1, H, W] in normalised
    units, sentence for its description)}, e.g. --interval's lower / upper."""

    args, task = run.args, run.task
    out_shape = from_slices(out[0, :, 0].numpy(), vol.ndim, args.axis).shape
    spacing, affine = (vol.spacing, vol.affine) if out_shape == vol.shape else scaled_geometry(vol, task.sr_factor, args.axis, out_shape)
    flag = "" if report is None or report.in_domain else "; OUT OF THE MODEL'S DOMAIN: " + "; ".join(report.reasons)

    meta = dict(vol.meta)
    if out_shape != vol.shape and vol.ndim == 3 and out_shape[args.axis] != vol.shape[args.axis]:
        for key in ("slice_thickness", "dicom_slices"):  # thin slices now: thickness and positions from the affine
            meta.pop(key, None)

    def volume_of(arr: torch.Tensor, what: str) -> Volume:
        a = from_slices(arr[:, 0].numpy(), vol.ndim, args.axis).astype(np.float32)
        return Volume(a, spacing, affine, vol.patient_id, vol.source,
                      {**meta, "derived": f"meddiff {task.kind} {what}, {run.describe}{flag}"})

    products = products_of(run, norm, out)
    notes = {tag: note for tag, (_, note) in (extra or {}).items()}
    products.update({tag: norm.inverse(m) for tag, (m, _) in (extra or {}).items()})
    if not run.used:  # the first write: unfinished until restore_files marks it complete
        mark(args.output, "sample", **({"complete": False, "run": run.key} if run.key else {}))
    suffix = unique_suffix(args, item, run.used)
    written: list[Path] = []
    for tag, arr in products.items():
        path = output_path(args.output, item, args.format, f"{tag}{suffix}", input_root=args.input,
                           patient_folder=args.keep_patient_tags)
        v = volume_of(arr, tag)
        ref = vol if v.shape == vol.shape else None
        written += write_volume(v, path, reference=ref, synthetic=True, keep_patient_tags=args.keep_patient_tags,
                                description=f"meddiff {task.kind} ({tag})" + (f": {notes[tag]}" if tag in notes else ""),
                                overwrite=True, provenance={**run.provenance, **_public_source(args, item)})
    return written


def _public_source(args: Request, item: ImageItem) -> dict:
    """The sidecar's source without patient tags kept: relative to --input, folders pseudonymised (meddiff.io.phi)."""
    if args.keep_patient_tags:
        return {}
    return {"source": str(public_relpath(item.path, args.input, is_dir=item.kind == "dicom_series"))}


def write_domain_reports(out: Path, reports: list) -> None:
    """OUT/domain_check.json: each input's domain findings (empty reasons = in domain)."""
    import json
    from dataclasses import asdict

    atomic_write_text(out / "domain_check.json", json.dumps([asdict(r) for r in reports], indent=1) + "\n")
