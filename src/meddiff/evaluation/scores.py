"""The scores beyond the per-image metrics: LPIPS, set-level FID/KID with bootstrap CIs over
patients, Dice of a segmenter, accuracy of a classifier, and uncertainty calibration rows."""

from __future__ import annotations

import csv
import importlib
import re
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..errors import FieldError, InputError
from ..metrics.fid_lowrank import fid_low_rank
from ..metrics.stats import MIN_PATIENTS_FOR_PATIENT_TEST, SetBootstrap, set_bootstrap
from ..metrics.weights import MissingWeightsError
from .collect import Collected, by_shape, to_unit_range


# format suffixes stripped to pair files across formats (other names are kept whole, so a
# DICOM file called "1.2.840.5" keeps its dots)
LPIPS_NETS = ("alex-st", "vgg-st", "alex")


# below this many images per set FID is strongly biased upwards (Chong and Forsyth 2020; Binkowski et al. 2018)
FID_MIN_IMAGES = 50


DEFAULT_MODEL = ""  # --segmenter / --classifier without FILE: the shipped model


def lpips_scores(c: Collected, net: str, backbone: Path | None, progress: bool, device: str = "cpu"
                 ) -> tuple[dict[str, list[float]] | None, str, str]:
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
    groups = by_shape(truth)
    for method, images in tqdm(c.preds.items(), desc="LPIPS", unit="method", disable=not progress):
        vals = np.zeros(len(truth))
        for idx in groups.values():
            a = np.stack([to_unit_range(images[i], c.window) for i in idx])[:, None]
            b = np.stack([truth[i] for i in idx])[:, None]
            vals[idx] = L.lpips_distance(a, b, net=net, backbone=backbone, device=device).double().numpy()
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


def fid_kid(c: Collected, progress: bool, seed: int, n_boot: int = 0, device: str = "cpu"
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
        for idx in by_shape(images).values():
            feats[idx] = F.inception_features(np.stack([images[i] for i in idx]), value_range=c.window, device=device)
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
    return out, _fid_kid_notes(net, n, c.window, n_subsets, subset, n_boot, seed, boot_unit, shifts)


def _fid_kid_notes(net: str, n: int, window: tuple[float, float], n_subsets: int, subset: int, n_boot: int, seed: int,
                   boot_unit: str, shifts: list[float]) -> list[str]:
    """The notes under the FID/KID table: the network, the set level and image range, how KID and the CIs
    were computed, and FID's bias at small N."""
    lo, hi = window
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
    return notes


def import_downstream(option: str, names: tuple[str, ...]) -> tuple[object, ...] | str:
    """``names`` from meddiff.downstream, or the reason they cannot be imported (a message naming ``option``)."""
    try:
        mod = importlib.import_module("meddiff.downstream")
        return tuple(getattr(mod, n) for n in names)
    except (ImportError, AttributeError) as e:
        return (f"{option} skipped: meddiff.downstream ({', '.join(names)}) cannot be imported "
                f"({type(e).__name__}: {e}); the other metrics are unaffected")


def model_path(option: str, value: str) -> Path | None:
    from ..checkpointing.named import resolve_checkpoint

    if value == DEFAULT_MODEL:
        return None
    path = Path(value)
    if not path.exists() and "/" not in value and not value.endswith(".safetensors"):
        return resolve_checkpoint(value)  # a shipped model's name, e.g. seg_mni152_tissue
    if not path.exists():
        raise FieldError(option, value, f"no such file; give a model file or {{{option}}} alone for the shipped default")
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
    for shape_idx in by_shape(c.truths).values():
        for b in _batches(shape_idx):
            r = torch.from_numpy(np.stack([c.seg_labels[i] for i in b])) if c.seg_labels is not None else run(c.truths, b)
            if c.seg_labels is not None and int(r.max()) >= n_classes:
                raise FieldError("seg_labels", text=f"{{seg_labels}}: label {int(r.max())} in {c.names[b[int(r.flatten(1).max(1).values.argmax())]]} "
                                 f"but the segmenter has {n_classes} classes {names}")
            for j, i in enumerate(b):
                ref[i] = r[j]
    out: dict[str, list[dict[str, float]]] = {}
    for method, images in c.preds.items():
        vals: list[dict[str, float]] = [{} for _ in images]
        for shape_idx in by_shape(c.truths).values():
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
        raise FieldError("labels", text=f"{{labels}} {path}: no such file; expected a CSV with columns case, label")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        if "case" not in fields or "label" not in fields:
            raise FieldError("labels", text=f"{{labels}} {path}: expected columns 'case' and 'label', got {fields}")
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
            raise FieldError("labels", text=f"{{labels}} {path}: label {v!r} of case {key!r} is neither a class of the classifier {class_names} "
                             f"nor an index 0..{len(class_names) - 1}")
    if missing:
        raise FieldError("labels", text=f"{{labels}} {path}: no label for {len(set(missing))} case(s), e.g. {sorted(set(missing))[:5]}")
    return out


def classifier_scores(c: Collected, clf: object, labels: list[int]) -> tuple[dict[str, list[float]], float]:
    """Per method and image: 1 if the classifier's top logit is the image's label, else 0 (their
    mean is the accuracy); and the accuracy on the ground-truth images."""
    import torch

    def correct(images: list[np.ndarray]) -> list[float]:
        vals = [0.0] * len(images)
        for shape_idx in by_shape(c.truths).values():
            for b in _batches(shape_idx):
                x = torch.from_numpy(np.stack([to_unit_range(images[i], c.window) for i in b])[:, None]).float()
                logits = _as_numpy(clf(x))  # type: ignore[operator]
                if logits.ndim != 2 or logits.shape[0] != len(b):
                    raise InputError(f"downstream classifier returned shape {logits.shape}; expected [{len(b)}, K] logits")
                for j, i in enumerate(b):
                    vals[i] = float(int(np.argmax(logits[j])) == labels[i])
        return vals

    return {m: correct(images) for m, images in c.preds.items()}, float(np.mean(correct(c.truths)))


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
