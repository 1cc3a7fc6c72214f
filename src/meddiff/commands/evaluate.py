"""`meddiff evaluate`: PSNR, SSIM and accutance of predictions against ground truth.

    meddiff evaluate --pred DIR --truth DIR [--input DIR] [--method-name NAME]
                     [--data-range auto|FLOAT] [--out DIR] [--keep-empty]

Files are paired by relative path without the format suffix (``a/case1.npy`` pairs with
``a/case1.nii.gz``; a DICOM series folder is one image). Volumes ``[Z, Y, X]`` are scored
slice by slice; slices whose ground truth is constant are skipped unless --keep-empty. With
``--input`` (the low-resolution images, or the already upsampled condition), bicubic and
bilinear upsampling of the input are scored as baselines on the same slices. Writes
results.md, results.csv and per_image.csv to --out and prints the Markdown table.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from ..baselines.interpolation import interpolate_baseline
from ..errors import InputError
from ..io import ImageItem, read_volume
from ..io import find_images as io_find_images
from ..metrics.compare import check_prediction, evaluate_arrays, per_image_metrics, rows_from_records  # noqa: F401
from ..metrics.table import write_per_image_csv, write_table

log = logging.getLogger(__name__)

# format suffixes stripped to pair files across formats (other names are kept whole, so a
# DICOM file called "1.2.840.5" keeps its dots)
SUFFIXES = (".nii.gz", ".nii", ".npy", ".npz", ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score predictions against ground truth (PSNR, SSIM, accutance) next to interpolation baselines",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pred", required=True, type=Path, help="folder of predicted images/volumes")
    p.add_argument("--truth", required=True, type=Path, help="folder of ground-truth images/volumes (same names)")
    p.add_argument("--input", type=Path, default=None,
                   help="folder of the degraded inputs (low-resolution or upsampled condition); adds bicubic/bilinear baselines")
    p.add_argument("--method-name", default=None, help="name of the predictions' row (default: the --pred folder name)")
    p.add_argument("--data-range", default="auto",
                   help="intensity range R for PSNR/SSIM/accutance: 'auto' (2 for data in [-1, 1], 1 for [0, 1], "
                        "else max - min of all ground truth) or a number (default: auto)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: <pred>/../evaluation)")
    p.add_argument("--keep-empty", action="store_true", help="also score slices whose ground truth is constant (skipped by default)")
    p.set_defaults(func=run)


def image_key(path: Path, folder: Path) -> str:
    """Pairing key: the path relative to ``folder`` ('/'-separated) without its format suffix."""
    rel = path.relative_to(folder).as_posix()
    suffix = next((x for x in SUFFIXES if rel.lower().endswith(x)), "")
    return rel[: len(rel) - len(suffix)] if path.is_file() else rel


def find_images(folder: Path) -> dict[str, ImageItem]:
    """Key (see :func:`image_key`) -> readable image under ``folder``; a DICOM series folder is one image."""
    found: dict[str, ImageItem] = {}
    for item in io_find_images(folder):
        key = image_key(item.path, folder)
        if key in found:
            raise InputError(f"{folder}: two images for the same name {key!r}: {found[key].path} and {item.path}")
        found[key] = item
    return found


def pair_files(pred: dict[str, ImageItem], truth: dict[str, ImageItem], pred_dir: Path, truth_dir: Path) -> list[str]:
    """Keys present in both; InputError naming the unpaired files otherwise."""
    only_pred = sorted(set(pred) - set(truth))
    only_truth = sorted(set(truth) - set(pred))
    if only_pred or only_truth:
        msg = []
        if only_pred:
            msg.append(f"no ground truth in {truth_dir} for {_names(pred, only_pred)}")
        if only_truth:
            msg.append(f"no prediction in {pred_dir} for {_names(truth, only_truth)}")
        raise InputError("; ".join(msg))
    return sorted(pred)


def _names(files: dict[str, ImageItem], keys: list[str], limit: int = 10) -> str:
    # relative path with its own suffix, e.g. "sub/case1.nii.gz"
    shown = ", ".join(k + files[k].path.name[len(k.rsplit("/", 1)[-1]):] for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def load_array(item: ImageItem) -> np.ndarray:
    """Pixels of one image as float64 ``[Y, X]`` or ``[Z, Y, X]`` (original units, via meddiff.io)."""
    return np.asarray(read_volume(item).array, dtype=np.float64)


def resolve_data_range(spec: str, truths: list[np.ndarray]) -> tuple[float, tuple[float, float] | None, str]:
    """(R, clamp range for baselines or None, a note saying how R was chosen) from --data-range."""
    if spec != "auto":
        try:
            r = float(spec)
        except ValueError:
            raise InputError(f"--data-range must be 'auto' or a number, got {spec!r}") from None
        if not r > 0:
            raise InputError(f"--data-range must be positive, got {spec!r}")
        return r, None, f"data range R = {r:g} (given)"
    lo = min(float(t.min()) for t in truths)
    hi = max(float(t.max()) for t in truths)
    eps = 1e-6
    if lo >= -1 - eps and hi <= 1 + eps and lo < 0:
        return 2.0, (-1.0, 1.0), f"data range R = 2 (auto: ground truth in [{lo:.3g}, {hi:.3g}], taken as [-1, 1])"
    if lo >= -eps and hi <= 1 + eps:
        return 1.0, (0.0, 1.0), f"data range R = 1 (auto: ground truth in [{lo:.3g}, {hi:.3g}], taken as [0, 1])"
    if hi <= lo:
        raise InputError(f"ground truth is constant ({lo:g}); give --data-range")
    return hi - lo, (lo, hi), f"data range R = {hi - lo:g} (auto: max - min of all ground truth, [{lo:g}, {hi:g}])"


def _slices(a: np.ndarray) -> list[np.ndarray]:
    return [a] if a.ndim == 2 else list(a)


def collect(args: argparse.Namespace) -> tuple[dict[str, list[np.ndarray]], list[np.ndarray], list[str], float, list[str]]:
    """Load and pair everything: (method -> slices, truth slices, slice names, R, notes)."""
    method = args.method_name or args.pred.resolve().name
    pred_files, truth_files = find_images(args.pred), find_images(args.truth)
    keys = pair_files(pred_files, truth_files, args.pred, args.truth)
    input_files = find_images(args.input) if args.input is not None else {}
    if args.input is not None and (missing := [k for k in keys if k not in input_files]):
        raise InputError(f"no input in {args.input} for {_names(truth_files, missing)}")
    pairs = []
    for k in keys:
        p, t = load_array(pred_files[k]), load_array(truth_files[k])
        check_prediction(p, t, f"{pred_files[k].path} vs {truth_files[k].path}")
        x = load_array(input_files[k]) if k in input_files else None
        if x is not None and (x.ndim != t.ndim or (x.ndim == 3 and x.shape[0] != t.shape[0])):
            raise InputError(f"{input_files[k].path}: input shape {x.shape} cannot be upsampled to ground-truth shape {t.shape}")
        pairs.append((k, p, t, x))
    r, clamp, range_note = resolve_data_range(args.data_range, [t for _, _, t, _ in pairs])
    preds: dict[str, list[np.ndarray]] = {method: []}
    truths, names, skipped = [], [], 0
    for k, p, t, x in pairs:
        ts, ps = _slices(t), _slices(p)
        xs = _slices(x) if x is not None else [None] * len(ts)
        for z, (ti, pi, xi) in enumerate(zip(ts, ps, xs)):
            if not args.keep_empty and ti.max() == ti.min():
                skipped += 1
                continue
            truths.append(ti)
            names.append(k if t.ndim == 2 else f"{k}[z={z}]")
            preds[method].append(pi)
            for name, img in _baselines(xi, ti.shape, clamp).items():
                preds.setdefault(name, []).append(img)
    if not truths:
        raise InputError(f"every ground-truth slice in {args.truth} is constant; nothing to score (use --keep-empty)")
    notes = [range_note, f"{len(truths)} images from {len(keys)} file(s); mean ± sample std over images"]
    if skipped:
        notes.append(f"{skipped} slice(s) with constant ground truth skipped")
    notes.append("accutance = 1000 · mean |Sobel gradient|² / R² (Higgins & Jones 1952, normalised); gradient ratio = accutance / accutance of the truth")
    return preds, truths, names, r, notes


def _baselines(x: np.ndarray | None, size: tuple[int, ...], clamp: tuple[float, float] | None) -> dict[str, np.ndarray]:
    """Interpolation baselines from one input slice: bicubic and bilinear, or the input itself if already full size."""
    if x is None:
        return {}
    if x.shape == tuple(size):
        return {"input (as given)": x}
    lim = clamp if clamp is not None else (float(x.min()), float(x.max()))
    return {m: interpolate_baseline(x, size, m, lim).astype(np.float64) for m in ("bicubic", "bilinear")}


def run(args: argparse.Namespace) -> int:
    preds, truths, names, r, notes = collect(args)
    records = per_image_metrics(preds, truths, r, names=names)
    rows = rows_from_records(records)
    out = args.out if args.out is not None else args.pred.resolve().parent / "evaluation"
    md = write_table(rows, out / "results.md", out / "results.csv", notes=notes)
    write_per_image_csv(out / "per_image.csv", records)
    print(md, end="")
    log.info("wrote %s, %s and %s", out / "results.md", out / "results.csv", out / "per_image.csv")
    return 0
