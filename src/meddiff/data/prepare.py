"""`meddiff prepare`: image files -> normalised square 2D slices, split by patient, cached.

Pipeline (one way): find_images -> read_volume -> per-patient Normalisation -> slices along
the chosen axes -> drop empty slices -> pad to square (-1) -> anti-aliased resize -> split
train/val/test by patient -> write the cache.

Output folder (written into a temporary sibling folder, renamed into place at the end, so an
interrupted run leaves nothing half-written):

    train.npy, val.npy, test.npy   float32 [N, size, size] in [-1, 1] (np.load(mmap_mode="r"))
    manifest.csv                   one row per slice (see MANIFEST_COLUMNS)
    normalisation.json             {"patients": {patient_id: Normalisation.to_dict()}, ...}
    prepare.json                   the options used, counts, meddiff version
    skipped.csv                    files skipped with --on-error skip (header only if none)
"""

from __future__ import annotations

import contextlib
import csv
import io as _io
import json
import re
import shutil
import time
import zlib
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from tqdm import tqdm

from .. import __version__
from ..errors import InputError
from ..io.atomic import atomic_dir, atomic_write_text
from ..io.outdir import check_output_dir, mark
from ..io.phi import pseudonym, public_relpath
from .normalise import Normalisation
from .slices import SliceGeometry, foreground_fraction, in_plane_spacing, iter_slices, to_model_slice
from .split import SPLITS, describe_small_cohort, split_counts, split_patients

MANIFEST_COLUMNS = (
    "split", "index", "case_id", "patient_id", "source", "axis", "slice_index",
    "volume_shape", "volume_spacing", "height", "width", "spacing_row_mm", "spacing_col_mm",
    "pad_top", "pad_bottom", "pad_left", "pad_right", "size", "foreground",
)  # fmt: skip


@dataclass(frozen=True)
class PrepareOptions:
    """Settings of `meddiff prepare` (see `meddiff prepare --help`)."""

    patient_from: str = "subfolder"  # "subfolder" | "file"
    axes: tuple[int, ...] = (0,)  # array axes of [Z, Y, X] to slice along
    size: int = 128
    percentiles: tuple[float, float] | None = None  # None: plain min/max per patient
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    min_foreground: float = 0.05
    on_error: str = "stop"  # "stop" | "skip"
    overwrite: bool = False
    allow_rgb_to_gray: bool = False  # colour inputs -> BT.601 luma (else refused)
    keep_patient_ids: bool = False  # write patient ids and folder names as they are (else pseudonyms, meddiff.io.phi)
    patient_map: str | None = None  # also write the pseudonym -> patient id map here (a file holding PHI)


@dataclass
class PrepareSummary:
    output: Path
    patients: dict[str, int] = field(default_factory=dict)  # split -> patients
    slices: dict[str, int] = field(default_factory=dict)  # split -> slices
    empty_slices: int = 0  # dropped by --min-foreground
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    bytes: int = 0

    def lines(self) -> list[str]:
        out = [f"prepared {sum(self.slices.values())} slices from {sum(self.patients.values())} patients -> {self.output}"]
        for s in SPLITS:
            out.append(f"  {s:5s}: {self.patients.get(s, 0):4d} patients {self.slices.get(s, 0):7d} slices")
        out.append(f"  empty slices dropped (foreground below threshold): {self.empty_slices}")
        if self.skipped:
            out.append(f"  skipped {len(self.skipped)} file(s) (listed in skipped.csv):")
            out += [f"    {f}: {r}" for f, r in self.skipped[:20]]
            if len(self.skipped) > 20:
                out.append(f"    ... and {len(self.skipped) - 20} more")
        out += [f"  note: {n}" for n in self.notes]
        out.append(f"  {self.seconds:.1f} s, {self.bytes / 1e6:.1f} MB written")
        return out


# --------------------------------------------------------------------------- reading


def check_volume(vol: Any) -> None:
    """Raise InputError naming the file if a Volume cannot be normalised (NaN/inf, constant)."""
    a = vol.array
    if not np.all(np.isfinite(a)):
        bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
        raise InputError(f"{vol.source}: {bad} NaN or infinite voxel(s); expected finite intensities")
    lo, hi = float(np.min(a)), float(np.max(a))
    if not hi > lo:
        raise InputError(f"{vol.source}: constant image (every voxel = {lo}); nothing to learn from")


def _read(item: Any, allow_rgb_to_gray: bool = False) -> Any:
    """read_volume(item) + check_volume; any failure becomes an InputError naming the file."""
    from ..io import read_volume

    path = Path(item.path)
    try:
        vol = read_volume(item, allow_rgb_to_gray=allow_rgb_to_gray)
        check_volume(vol)
        return vol
    except Exception as e:  # corrupt files raise all sorts of errors inside the readers
        msg = str(e)
        if isinstance(e, InputError) and str(path) in msg:
            raise
        raise InputError(f"{path}: {msg or type(e).__name__}") from e


def _case_id(patient_id: str, source: Path, axis: int, index: int, seen: set[str]) -> str:
    """Readable, file-name-safe, unique id of one slice, e.g. 'colin27_axial_ax0_0045'."""
    stem = source.name.split(".")[0] if source.is_file() or "." in source.name else source.name
    base = f"{patient_id}_{stem}" + ("" if axis == -1 else f"_ax{axis}_{index:04d}")
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", base)
    cid, k = base, 2
    while cid in seen:
        cid, k = f"{base}-{k}", k + 1
    seen.add(cid)
    return cid


# --------------------------------------------------------------------------- one patient


def _prepare_patient(
    pid: str, items: list[Any], opts: PrepareOptions, input_dir: Path, raw: Path,
    summary: PrepareSummary, seen: set[str], bar: tqdm,
) -> tuple[list[dict[str, Any]], Normalisation | None]:  # fmt: skip
    """Read, normalise and slice one patient's files; append slices to `raw` (float32 bytes)."""
    volumes = []
    for item in items:
        path = Path(item.path)
        bar.set_postfix_str(f"{pid}: {path.name}"[:40])
        try:
            volumes.append(_read(item, opts.allow_rgb_to_gray))
        except InputError as e:
            if opts.on_error == "stop":
                raise
            shown = str(path) if opts.keep_patient_ids else public_relpath(path, input_dir).as_posix()
            summary.skipped.append((shown, str(e).replace(f"{path}: ", "", 1)))
        bar.update(1)
    if not volumes:
        return [], None
    norm = Normalisation.from_volume(volumes, opts.percentiles)
    rows: list[dict[str, Any]] = []
    with open(raw, "ab") as f:
        for vol in volumes:
            normalised = np.asarray(norm.forward(vol.array), dtype=np.float32)
            for axis, i, img in iter_slices(normalised, opts.axes):
                fg = foreground_fraction(img)
                if fg < opts.min_foreground:
                    summary.empty_slices += 1
                    continue
                out, geom = to_model_slice(img, opts.size)
                f.write(np.ascontiguousarray(out, dtype=np.float32).tobytes())
                rows.append(_row(pid, vol, input_dir, axis, i, geom, fg, seen, public=not opts.keep_patient_ids))
    return rows, norm


def _row(pid: str, vol: Any, input_dir: Path, axis: int, i: int, geom: SliceGeometry, fg: float, seen: set[str], *,
         public: bool = True) -> dict[str, Any]:
    source = Path(vol.source)
    with contextlib.suppress(ValueError):
        source = source.resolve().relative_to(input_dir.resolve())
    named = Path(vol.source)
    if public:  # folder names pseudonymised (meddiff.io.phi)
        source = public_relpath(Path(vol.source).resolve(), input_dir.resolve())
        named = Path(vol.source).with_name(source.name)
    sr, sc = in_plane_spacing(tuple(vol.spacing), axis)
    return {
        "case_id": _case_id(pid, named, axis, i, seen), "patient_id": pid,
        "source": source.as_posix(), "axis": axis, "slice_index": i,
        "volume_shape": "x".join(str(s) for s in vol.shape),
        "volume_spacing": "x".join(f"{s:g}" for s in vol.spacing),
        "height": geom.height, "width": geom.width, "spacing_row_mm": f"{sr:g}", "spacing_col_mm": f"{sc:g}",
        "pad_top": geom.pad_top, "pad_bottom": geom.pad_bottom, "pad_left": geom.pad_left,
        "pad_right": geom.pad_right, "size": geom.size, "foreground": f"{fg:.4f}",
    }  # fmt: skip


# --------------------------------------------------------------------------- writing


def _csv_text(columns: Iterable[str], rows: Iterable[dict[str, Any]]) -> str:
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _assemble(tmp: Path, per_patient: dict[str, list[dict]], assignment: dict[str, str], size: int) -> list[dict]:
    """Concatenate the per-patient raw slices into <split>.npy; return manifest rows in order."""
    manifest: list[dict] = []
    slice_bytes = size * size * 4
    for split in SPLITS:
        pids = [p for p in sorted(per_patient) if assignment[p] == split]
        n = sum(len(per_patient[p]) for p in pids)
        arr = np.lib.format.open_memmap(tmp / f"{split}.npy", mode="w+", dtype=np.float32, shape=(n, size, size))
        k = 0
        for p in pids:
            raw = tmp / "raw" / f"{_safe(p)}.f32"
            m = len(per_patient[p])
            if m:
                arr[k : k + m] = np.fromfile(raw, dtype=np.float32, count=m * slice_bytes // 4).reshape(m, size, size)
            for row in per_patient[p]:
                manifest.append({"split": split, "index": k, **row})
                k += 1
        arr.flush()
        del arr
    return manifest


def _safe(pid: str) -> str:
    """File-name-safe and collision-free name for a patient's temporary file."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", pid)[:60] + f"-{zlib.crc32(pid.encode()):08x}"


# --------------------------------------------------------------------------- entry point


def prepare(input_dir: str | Path, output_dir: str | Path, opts: PrepareOptions = PrepareOptions(), progress: bool = True) -> PrepareSummary:
    """Run the whole pipeline; returns the summary. Raises InputError for unusable input."""
    from ..io import find_images

    t0 = time.perf_counter()
    input_dir, output = Path(input_dir), Path(output_dir)
    if not input_dir.exists():
        from ..io.readers import missing
        raise InputError(f"input {missing(input_dir, 'a folder of images')}")
    if not input_dir.is_dir():
        raise InputError(f"input folder {input_dir} is a file; expected a folder of images (put the file in a folder)")
    check_output_dir(output, [input_dir], overwrite=opts.overwrite, inside_input_ok=False, verb="prepare")  # never an input, only a folder meddiff wrote
    if opts.on_error not in ("stop", "skip"):
        raise InputError(f"--on-error: expected 'stop' or 'skip', got {opts.on_error!r}")
    split_counts(0, opts.split)  # validates the fractions before any work
    if opts.percentiles is not None and not 0.0 <= opts.percentiles[0] < opts.percentiles[1] <= 100.0:
        raise InputError(f"--clip-percentiles: expected 0 <= LO < HI <= 100, got {opts.percentiles}")
    items = list(find_images(input_dir, patient_from=opts.patient_from))  # raises InputError if none
    by_patient: dict[str, list[Any]] = defaultdict(list)
    for it in items:
        by_patient[str(it.patient_id)].append(it)

    summary = PrepareSummary(output=output)
    # check_output_dir has refused a non-empty OUTPUT_DIR unless meddiff wrote it and overwrite is set
    with atomic_dir(output, replace=True) as tmp:
        mark(tmp, "prepare")
        (tmp / "raw").mkdir()
        per_patient, norms, seen = {}, {}, set()
        with tqdm(total=len(items), desc="prepare", unit="file", disable=not progress) as bar:
            for pid in sorted(by_patient):
                shown = pid if opts.keep_patient_ids else pseudonym(pid)
                rows, norm = _prepare_patient(shown, by_patient[pid], opts, input_dir, tmp / "raw" / f"{_safe(pid)}.f32", summary, seen, bar)
                if rows:
                    per_patient[pid], norms[pid] = rows, norm
        if not per_patient:
            why = f"{len(summary.skipped)} file(s) skipped" if summary.skipped else f"no slice has foreground >= {opts.min_foreground}"
            raise InputError(f"no usable slices in {input_dir} ({why})")
        assignment = split_patients(list(per_patient), opts.split, opts.seed)
        manifest = _assemble(tmp, per_patient, assignment, opts.size)
        shutil.rmtree(tmp / "raw")
        for s in SPLITS:
            summary.patients[s] = sum(1 for p in per_patient if assignment[p] == s)
            summary.slices[s] = sum(1 for r in manifest if r["split"] == s)
        note = describe_small_cohort(len(per_patient), opts.split)
        if note:
            summary.notes.append(note)
        shown = {p: p if opts.keep_patient_ids else pseudonym(p) for p in per_patient}
        _write_metadata(tmp, input_dir, opts, manifest, {shown[p]: n for p, n in norms.items()},
                        {shown[p]: s for p, s in assignment.items()}, summary)
        if opts.patient_map is not None:
            write_patient_map(opts.patient_map, shown)
        summary.bytes = sum(p.stat().st_size for p in tmp.iterdir())
    summary.seconds = time.perf_counter() - t0
    return summary


def write_patient_map(path: str | Path, shown: dict[str, str]) -> None:
    """pseudonym -> patient id as CSV, atomically (it holds PHI: the user asked for it with --patient-map)."""
    rows = [{"pseudonym": v, "patient_id": k} for k, v in sorted(shown.items(), key=lambda kv: kv[1])]
    atomic_write_text(path, _csv_text(("pseudonym", "patient_id"), rows))


def _write_metadata(tmp, input_dir, opts, manifest, norms, assignment, summary) -> None:
    atomic_write_text(tmp / "manifest.csv", _csv_text(MANIFEST_COLUMNS, manifest))
    atomic_write_text(tmp / "skipped.csv", _csv_text(("file", "reason"), [{"file": f, "reason": r} for f, r in summary.skipped]))
    norm_doc = {
        "description": "per-patient linear map to [-1, 1]: y = 2 (x - lo) / (hi - lo) - 1 (x clipped to [lo, hi] if clip)",
        "patients": {p: norms[p].to_dict() for p in sorted(norms)},
    }
    atomic_write_text(tmp / "normalisation.json", json.dumps(norm_doc, indent=1) + "\n")
    info = {
        "meddiff_version": __version__,
        "input_dir": str(input_dir.resolve()) if opts.keep_patient_ids else None,  # may name a patient (meddiff.io.phi)
        "options": {**asdict(opts), "patient_map": opts.patient_map and (opts.patient_map if opts.keep_patient_ids else "<path>")},
        "splits": {p: assignment[p] for p in sorted(assignment)},
        "slices": summary.slices,
        "empty_slices": summary.empty_slices,
        "skipped": len(summary.skipped),
        "notes": summary.notes,
    }
    atomic_write_text(tmp / "prepare.json", json.dumps(info, indent=1) + "\n")
