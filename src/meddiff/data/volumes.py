"""`meddiff prepare --mode volume`: image volumes -> normalised volumes on one RAS grid, split by patient.

Pipeline (one way): find_images -> read_volume -> per-patient Normalisation (the same window as
the slice mode: min/max or --clip-percentiles over all of a patient's volumes) -> resampled to the
target spacing on an axis-aligned RAS+ grid (nibabel.processing.resample_to_output, linear
interpolation, background -1) -> split train/val/test by patient -> written.

Output folder (built in a temporary sibling, renamed into place at the end):

    volumes/<case_id>.npy  float32 [Z, Y, X] in [-1, 1]; axes S, A, R (array index increasing
                           towards superior, anterior, right), spacing = the target (mm)
    volumes.csv            one row per volume: split, case_id, patient_id, source, shape, spacing, affine
                           (4x4 voxel [z, y, x] -> RAS mm, as JSON)
    normalisation.json     {"patients": {patient_id: Normalisation.to_dict()}} (as the slice mode)
    prepare.json           {"mode": "volume", options, splits, counts, meddiff version}

The datasets of 3D patches and 2.5D slice stacks (meddiff.data.volume_dataset) read this folder.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .. import __version__
from ..errors import InputError
from ..io.atomic import atomic_dir, atomic_write_text
from ..io.outdir import check_output_dir, mark
from .normalise import Normalisation
from .split import SPLITS, split_counts, split_patients

COLUMNS = ("split", "case_id", "patient_id", "source", "shape", "spacing", "affine")


@dataclass(frozen=True)
class VolumeOptions:
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)  # mm along [Z, Y, X] = (S, A, R)
    patient_from: str = "subfolder"
    percentiles: tuple[float, float] | None = None
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    overwrite: bool = False


def resample_ras(array: np.ndarray, affine: np.ndarray, spacing: tuple[float, float, float],
                 background: float = -1.0) -> tuple[np.ndarray, np.ndarray]:
    """Resample `array` [Z, Y, X] (affine: voxel (z, y, x) -> RAS mm) onto an axis-aligned RAS+ grid
    of `spacing` (mm along S, A, R); returns (array [S, A, R] float32, its affine for (z, y, x))."""
    import nibabel as nib
    from nibabel.processing import resample_to_output

    if array.ndim != 3:
        raise InputError(f"volume mode needs 3D volumes [Z, Y, X], got shape {array.shape}")
    if any(not s > 0 for s in spacing):
        raise InputError(f"--spacing: expected positive millimetres, got {spacing}")
    xyz = nib.Nifti1Image(np.ascontiguousarray(array.transpose(2, 1, 0), dtype=np.float32), affine[:, [2, 1, 0, 3]])
    out = resample_to_output(xyz, voxel_sizes=tuple(spacing[::-1]), order=1, mode="constant", cval=background)
    return np.ascontiguousarray(np.asarray(out.dataobj, np.float32).transpose(2, 1, 0)), out.affine[:, [2, 1, 0, 3]]


def prepare_volumes(input_dir: str | Path, output_dir: str | Path, opts: VolumeOptions = VolumeOptions()) -> dict[str, int]:
    """Write the volume cache; returns the number of volumes per split."""
    from ..io import find_images, read_volume

    input_dir, output = Path(input_dir), Path(output_dir)
    if not input_dir.is_dir():
        raise InputError(f"input folder {input_dir} does not exist or is not a folder")
    check_output_dir(output, [input_dir], overwrite=opts.overwrite, inside_input_ok=False, verb="prepare")
    split_counts(0, opts.split)
    by_patient: dict[str, list[Any]] = defaultdict(list)
    for item in find_images(input_dir, patient_from=opts.patient_from):
        by_patient[str(item.patient_id)].append(read_volume(item))
    assignment = split_patients(list(by_patient), opts.split, opts.seed)
    rows, norms = [], {}
    with atomic_dir(output, replace=True) as tmp:
        mark(tmp, "prepare")
        (tmp / "volumes").mkdir()
        for pid in sorted(by_patient):
            vols = by_patient[pid]
            norms[pid] = Normalisation.from_volume(vols, opts.percentiles)
            for k, vol in enumerate(vols):
                arr, aff = resample_ras(norms[pid].forward(vol.array.astype(np.float32)), vol.affine, opts.spacing)
                case = f"{_safe(pid)}_{k:03d}_{_safe(Path(vol.source).name.split('.')[0])}"
                np.save(tmp / "volumes" / f"{case}.npy", arr)
                rows.append({"split": assignment[pid], "case_id": case, "patient_id": pid, "source": str(vol.source),
                             "shape": "x".join(map(str, arr.shape)), "spacing": "x".join(f"{s:g}" for s in opts.spacing),
                             "affine": json.dumps(np.round(aff, 6).tolist())})
        counts = {s: sum(r["split"] == s for r in rows) for s in SPLITS}
        _write_metadata(tmp, input_dir, opts, rows, norms, assignment, counts)
    return counts


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "case"


def _write_metadata(tmp: Path, input_dir: Path, opts: VolumeOptions, rows, norms, assignment, counts) -> None:
    with open(tmp / "volumes.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    doc = {"description": "per-patient linear map to [-1, 1]: y = 2 (x - lo) / (hi - lo) - 1 (x clipped to [lo, hi] if clip)",
           "patients": {p: norms[p].to_dict() for p in sorted(norms)}}
    atomic_write_text(tmp / "normalisation.json", json.dumps(doc, indent=1) + "\n")
    info = {"mode": "volume", "meddiff_version": __version__, "input_dir": str(input_dir.resolve()),
            "options": asdict(opts), "splits": dict(sorted(assignment.items())), "volumes": counts}
    atomic_write_text(tmp / "prepare.json", json.dumps(info, indent=1) + "\n")


@dataclass(frozen=True)
class PreparedVolumes:
    """A folder written by prepare_volumes: rows per split and the per-patient normalisation."""

    root: Path
    rows: Mapping[str, tuple[dict[str, str], ...]]
    normalisation: Mapping[str, Normalisation]

    def array(self, split: str, index: int) -> np.ndarray:
        """Volume `index` of `split`: float32 [Z, Y, X] in [-1, 1] (memory-mapped, read-only)."""
        return np.load(self.root / "volumes" / f"{self.rows[split][index]['case_id']}.npy", mmap_mode="r")


def load_volumes(prepared_dir: str | Path) -> PreparedVolumes:
    """Open a folder written by `meddiff prepare --mode volume`."""
    root = Path(prepared_dir)
    if not (root / "volumes.csv").is_file():
        raise InputError(f"{root} is not a prepared volume folder (no volumes.csv); run `meddiff prepare --mode volume` first")
    with open(root / "volumes.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    doc = json.loads((root / "normalisation.json").read_text())
    norms = {p: Normalisation.from_dict(d) for p, d in doc["patients"].items()}
    return PreparedVolumes(root, {s: tuple(r for r in rows if r["split"] == s) for s in SPLITS}, norms)
