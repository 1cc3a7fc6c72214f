"""Pairing predictions with ground truth for `meddiff evaluate`: pairing keys (path without the
format suffix), the products of `meddiff sample` (<stem>_restored / _mean / _std / _sample<k>),
method and group specifications (--pred NAME@GROUP=DIR ...), patients, and geometry checks."""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InputError
from ..io import ImageItem, Volume, read_volume
from ..io import find_images as io_find_images
from ..io.suffixes import image_suffix


# products of `meddiff sample` (meddiff.restore.output_path): <stem>_<tag>.<ext>
SAMPLE_TAG = re.compile(r"^(?P<base>.+)_(?P<tag>restored|mean|std|sample\d+)$")


if TYPE_CHECKING:  # the request type only (evaluation.request)
    from .request import EvaluationRequest


def image_key(path: Path, folder: Path) -> str:
    """Pairing key: the path relative to ``folder`` ('/'-separated) without its format suffix."""
    rel = path.relative_to(folder).as_posix()
    suffix = image_suffix(rel)
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
    check_paired(pred, sorted(set(pred) - set(truth)), truth, sorted(set(truth) - set(pred)), pred_dir, truth_dir)
    return sorted(pred)


def check_paired(pred: dict, only_pred: list[str], truth: dict, only_truth: list[str], pred_dir: Path, truth_dir: Path) -> None:
    """InputError naming the predictions without a truth and the truths without a prediction, if any."""
    msg = []
    if only_pred:
        msg.append(f"no ground truth in {truth_dir} for {describe_names(pred, only_pred)}")
    if only_truth:
        msg.append(f"no prediction in {pred_dir} for {describe_names(truth, only_truth)}")
    if msg:
        raise InputError("; ".join(msg))


def describe_names(files: dict[str, ImageItem], keys: list[str], limit: int = 10) -> str:
    # relative path with its own suffix, e.g. "sub/case1.nii.gz"
    shown = ", ".join(k + files[k].path.name[len(k.rsplit("/", 1)[-1]):] for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def load_array(item: ImageItem) -> np.ndarray:
    """Pixels of one image as float64 ``[Y, X]`` or ``[Z, Y, X]`` (original units, via meddiff.io)."""
    return np.asarray(read_volume(item).array, dtype=np.float64)


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


def parse_groups(args: EvaluationRequest) -> list[GroupSpec]:
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
    check_paired(files, unmatched, truth, sorted(set(truth) - set(out.pred)), folder, truth_dir)
    if out.std and (no_std := sorted(set(out.pred) - set(out.std))):
        raise InputError(f"{folder}: per-pixel std (<stem>_std) for {len(out.std)} case(s) but not for {describe_names(truth, no_std)}; "
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
