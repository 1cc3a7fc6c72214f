"""Loading one evaluation group (every method's files against the ground truth) into per-slice
arrays (`Collected`), with the intensity range and window the metrics use and the bicubic /
bilinear baselines of the input."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from ..baselines.interpolation import interpolate_baseline
from ..errors import InputError
from ..io import ImageItem, read_volume
from ..io.phi import pseudonym, public_key
from ..metrics.compare import check_prediction
from .pairing import (GroupSpec, MethodFiles, check_geometry, describe_names, find_images, group_factor, load, match_method_files,
                      read_patients_csv, written_task)


RANGE_SPECS = ("auto", "per-image", "pooled")


if TYPE_CHECKING:  # the request type only (evaluation.request)
    from .request import EvaluationRequest


def resolve_data_range(spec: str, truths: list[np.ndarray]) -> tuple[float, tuple[float, float] | None, str, bool]:
    """(R, clamp range for baselines or None, a note saying how R was chosen, per_image) from --data-range.

    auto (default): ground truth in [-1, 1] or [0, 1] (normalised data) is scored on that nominal
    range; data in physical units (HU, MR signal) on each ground-truth file's own max - min
    (per-image, so a CT and an MR in one set are not scored on one pooled range). per-image: always
    each file's own range. pooled: one R = max - min of all ground truth (asked for only). A number: that R.
    When per_image, R and the clamp range are the pooled ones, for display and LPIPS/FID windows."""
    if spec not in RANGE_SPECS:
        try:
            r = float(spec)
        except ValueError:
            raise InputError(f"--data-range must be one of {', '.join(RANGE_SPECS)} or a number, got {spec!r}") from None
        if not r > 0:
            raise InputError(f"--data-range must be positive, got {spec!r}")
        return r, None, f"data range R = {r:g} (given)", False
    lo = min(float(t.min()) for t in truths)
    hi = max(float(t.max()) for t in truths)
    eps = 1e-6
    if spec != "per-image":
        if lo >= -1 - eps and hi <= 1 + eps and lo < 0:
            return 2.0, (-1.0, 1.0), f"data range R = 2 ({spec}: ground truth in [{lo:.3g}, {hi:.3g}], taken as [-1, 1])", False
        if lo >= -eps and hi <= 1 + eps:
            return 1.0, (0.0, 1.0), f"data range R = 1 ({spec}: ground truth in [{lo:.3g}, {hi:.3g}], taken as [0, 1])", False
    if hi <= lo:
        raise InputError(f"ground truth is constant ({lo:g}); give --data-range")
    if spec != "pooled":
        return hi - lo, (lo, hi), (f"data range R = each ground-truth file's own max - min (--data-range {spec}; "
                                   "--data-range pooled for one range over all files)"), True
    note = f"data range R = {hi - lo:g} (pooled: max - min of all ground truth, [{lo:g}, {hi:g}])"
    own = [float(t.max() - t.min()) for t in truths]
    if min(own) > 0 and max(own) / min(own) > 4:  # e.g. CT (thousands of HU) pooled with MR (hundreds)
        note += (f"; WARNING: the ground-truth files' own ranges differ {max(own) / min(own):.0f}-fold "
                 f"({min(own):g} to {max(own):g}): PSNR/SSIM of the narrow-range images are inflated; "
                 "drop --data-range pooled to score each file on its own range")
    return hi - lo, (lo, hi), note, False


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


def by_shape(images: list[np.ndarray]) -> dict[tuple[int, ...], list[int]]:
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, a in enumerate(images):
        groups.setdefault(tuple(a.shape), []).append(i)
    return groups


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
    ranges: list[float] = field(default_factory=list)  # R of each slice's file (used when per_image)
    per_image: bool = False  # score each slice on its file's own range (resolve_data_range)


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
        raise InputError(f"no mask in {path} for {describe_names(truth, missing)}")
    return {k: (load(found[k]).array != 0, found[k].path) for k in keys}


@dataclass(frozen=True)
class GroupFiles:
    """The files of one group, paired by key: ground truth, each method's predictions (and std maps),
    inputs, reference labels and masks, and the patient of each key."""

    truth: dict[str, ImageItem]
    keys: list[str]
    methods: dict[str, MethodFiles]
    inputs: dict[str, ImageItem]
    labels: dict[str, ImageItem]
    masks: dict[str, tuple[np.ndarray, Path]]
    patient_of: dict[str, str]


def group_files(args: EvaluationRequest, g: GroupSpec, where: str) -> GroupFiles:
    """Find and pair the files of group `g` (InputError naming what is missing)."""
    truth_files = find_images(g.truth, args.patient_from)
    keys = sorted(truth_files)
    if not keys:
        raise InputError(f"--truth {g.truth}{where}: no readable image found")
    method_files = {name: match_method_files(folder, truth_files, g.truth) for name, folder in g.methods}
    input_files = find_images(g.input) if g.input is not None else {}
    if g.input is not None and (missing := [k for k in keys if k not in input_files]):
        raise InputError(f"no input in {g.input} for {describe_names(truth_files, missing)}")
    if g.input is not None and (clash := [n for n, _ in g.methods if n in ("bicubic", "bilinear", "input (as given)")]):
        raise InputError(f"method name(s) {clash} clash with the --input baselines; rename them with --pred NAME=DIR")
    label_files = find_images(g.seg_labels) if g.seg_labels is not None else {}
    if g.seg_labels is not None and (missing := [k for k in keys if k not in label_files]):
        raise InputError(f"no label image in {g.seg_labels} for {describe_names(truth_files, missing)}")
    masks = _read_masks(g.mask, truth_files, keys) if g.mask is not None else {}
    patient_of = read_patients_csv(args.patients, keys) if args.patients is not None else \
        {k: truth_files[k].patient_id for k in keys}
    return GroupFiles(truth_files, keys, method_files, input_files, label_files, masks, patient_of)


def _load_std(item: ImageItem, shape: tuple[int, ...]) -> np.ndarray:
    """A method's per-pixel std map, checked (same shape as the prediction, no negative values)."""
    sd = np.asarray(load(item).array, np.float64)
    if sd.shape != shape:
        raise InputError(f"{item.path}: std map shape {sd.shape} differs from the prediction's {shape}")
    if (sd < 0).any():
        raise InputError(f"{item.path}: std map has {int((sd < 0).sum())} negative value(s); expected >= 0")
    return sd


def load_case(f: GroupFiles, k: str) -> tuple:
    """(key, predictions by method, truth, input or None, hole or None, std maps by method, labels or None)
    of one key, each checked against the ground truth's shape and geometry."""
    truth_files = f.truth
    tv = load(truth_files[k])
    t = np.asarray(tv.array, np.float64)
    ps, sds = {}, {}
    for name, mf in f.methods.items():
        pv = load(mf.pred[k])
        p = np.asarray(pv.array, np.float64)
        check_prediction(p, t, f"{mf.pred[k].path} vs {truth_files[k].path}")
        check_geometry(pv, tv, f"{mf.pred[k].path} vs {truth_files[k].path}")
        ps[name] = p
        if k in mf.std:
            sds[name] = _load_std(mf.std[k], t.shape)
    x = np.asarray(load(f.inputs[k]).array, np.float64) if k in f.inputs else None
    if x is not None and (x.ndim != t.ndim or (x.ndim == 3 and x.shape[0] != t.shape[0])):
        raise InputError(f"{f.inputs[k].path}: input shape {x.shape} cannot be upsampled to ground-truth shape {t.shape}")
    hole = None
    if k in f.masks:
        hole, mpath = f.masks[k]
        if hole.shape != t.shape:
            raise InputError(f"{mpath}: mask shape {hole.shape} differs from ground-truth shape {t.shape} of "
                             f"{truth_files[k].path}; expected one mask value per pixel")
    lab = None
    if k in f.labels:
        lab = np.asarray(load(f.labels[k]).array)
        if lab.shape != t.shape:
            raise InputError(f"{f.labels[k].path}: label image shape {lab.shape} differs from ground-truth shape {t.shape} "
                             f"of {truth_files[k].path}")
        if not np.all(lab == np.round(lab)) or lab.min() < 0:
            raise InputError(f"{f.labels[k].path}: label image has non-integer or negative values; expected class indices 0..K-1")
    return k, ps, t, x, hole, sds, lab


def check_written_task(g: GroupSpec, f: GroupFiles, shapes_differ: bool, where: str) -> None:
    """Refuse predictions `meddiff sample` wrote for another task than this group's."""
    expected = _expected_task(g, shapes_differ)
    if expected is None:
        return
    for name, mf in f.methods.items():
        for k in f.keys:
            got = written_task(mf.pred[k].path)
            if got is not None and got != expected:
                raise InputError(f"{mf.pred[k].path}: written by `meddiff sample` for task {got!r}, but this evaluation"
                                 f"{where} is {expected!r} ({'--mask given' if expected == 'inpaint' else 'super-resolution'}); "
                                 "is it the right run folder?")


def collect(args: EvaluationRequest, g: GroupSpec) -> Collected:
    """Load and pair everything of one group (every method's files against the ground truth)."""
    where = f" (group {g.name})" if g.name else ""
    f = group_files(args, g, where)
    loaded = [load_case(f, k) for k in tqdm(f.keys, desc=f"reading{where}", unit="file", disable=not args.progress)]
    shapes_differ = any(x is not None and x.shape != t.shape for _, _, t, x, *_ in loaded)
    check_written_task(g, f, shapes_differ, where)
    r, clamp, range_note, per_image = resolve_data_range(args.data_range, [row[2] for row in loaded])
    window = intensity_window(r, clamp, [row[2] for row in loaded])
    c = Collected({n: [] for n, _ in g.methods}, [], [], [], [], r, window, [n for n, _ in g.methods])
    c.per_image = per_image
    c.holes = [] if f.masks else None
    c.seg_labels = [] if f.labels else None
    c.stds = {n: [] for n, mf in f.methods.items() if mf.std}
    c.samples = {n: (min(mf.samples.values()) if mf.samples and len(mf.samples) == len(f.keys) else None)
                 for n, mf in f.methods.items() if mf.std}
    shown = (lambda k: k) if args.keep_patient_tags else (lambda k: public_key(k, f.truth[k].kind == "dicom_series"))
    patient = (lambda k: f.patient_of[k]) if args.keep_patient_tags else (lambda k: pseudonym(f.patient_of[k]))
    skipped = sum(add_slices(c, args.keep_empty, patient(row[0]), row, clamp, shown(row[0])) for row in loaded)
    if not c.truths:
        raise InputError(f"every ground-truth slice in {g.truth} is constant; nothing to score (use --keep-empty)")
    n_pat = len(set(c.patients))
    c.notes = [range_note, f"{len(c.truths)} images from {len(f.keys)} file(s) of {n_pat} patient(s)"]
    if skipped:
        c.notes.append(f"{skipped} slice(s) with constant ground truth skipped")
    if c.holes is not None:
        n_holes = sum(int(h.any()) for h in c.holes)
        c.notes.append(f"hole metrics (PSNR/SSIM/MAE in hole): over the pixels --mask marks missing (nonzero), on the {n_holes} "
                       f"image(s) with at least one such pixel; SSIM = mean of the full-image SSIM map over the hole; "
                       "MAE in intensity units")
    return c


def add_slices(c: Collected, keep_empty: bool, patient: str, row: tuple, clamp: tuple[float, float] | None,
               name: str | None = None) -> int:
    """Append the 2D slices of one loaded case (load_case) to `c`, named `name` (default: its key) in the
    outputs; returns the slices skipped (constant truth)."""
    key, ps, t, x, hole, sds, lab = row
    k = key if name is None else name
    ts = _slices(t)
    pss = {n: _slices(p) for n, p in ps.items()}
    sdss = {n: _slices(sd) for n, sd in sds.items()}
    xs = _slices(x) if x is not None else [None] * len(ts)
    hs = _slices(hole) if hole is not None else [None] * len(ts)
    ls = _slices(lab) if lab is not None else [None] * len(ts)
    skipped = 0
    for z, (ti, xi) in enumerate(zip(ts, xs)):
        if not keep_empty and ti.max() == ti.min():
            skipped += 1
            continue
        c.truths.append(ti)
        c.ranges.append(float(t.max() - t.min()))  # the file's own R (used when c.per_image)
        c.names.append(k if t.ndim == 2 else f"{k}[z={z}]")
        c.patients.append(patient)
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
    return skipped
