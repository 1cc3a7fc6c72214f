"""Chest-film findings: the labels of a chest-film folder and the classifier that reads them.

One network, five classes, two sources (one film's source is always known from its metadata):

    0 adult normal          1 adult pneumonia                           (NIH ChestX-ray14)
    2 pediatric normal      3 pediatric bacterial   4 pediatric viral   (Kermany)

Scores are per source, never pooled: on a film of source s the prediction is the argmax of the
logits over s's classes only, and the class probabilities are the softmax over those logits,
p_k = exp(l_k) / sum_{j in s} exp(l_j) for k in s (the classifier's two tasks, normal / pneumonia
on adults and normal / bacterial / viral on children, read off one trunk). On a film of unknown
source (a generated one) the argmax over all five names source and finding together.

Labels from a folder's ``metadata.csv`` (columns ``file``, ``source_dataset``, ``patient_id``,
``split``, ``finding``): NIH films whose ``Finding Labels`` contain "Pneumonia" are pneumonia,
"No Finding" is normal; Kermany findings are "Normal", "Pneumonia (bacteria)", "Pneumonia (virus)".

Input: films scaled by their own 0.5 / 99.5 percentiles to [-1, 1] (as `meddiff prepare
--clip-percentiles 0.5 99.5`) at any square size, area-averaged to ``INPUT_SIZE`` (128 x 128)
by :func:`classifier_input`.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError
from .models import CHECKPOINTS, Classifier

CLS_CXR_FILE = CHECKPOINTS / "cls_cxr.safetensors"
INPUT_SIZE = 128
CXR_CLASSES = ("adult normal", "adult pneumonia", "pediatric normal", "pediatric bacterial", "pediatric viral")
ADULT, PEDIATRIC = "adult (NIH)", "pediatric (Kermany)"
SOURCE_CLASSES = {ADULT: (0, 1), PEDIATRIC: (2, 3, 4)}  # class indices of each source
KERMANY_FINDINGS = {"Normal": 2, "Pneumonia (bacteria)": 3, "Pneumonia (virus)": 4}
CXR_INPUT_NOTE = ("[B, 1, 128, 128] float in [-1, 1]: a frontal chest film scaled by its own 0.5 and 99.5 percentiles "
                  "to [-1, 1] (as `meddiff prepare --clip-percentiles 0.5 99.5`), area-averaged from 256 x 256; "
                  "per-source decisions over that source's classes (meddiff.downstream.cxr)")
REQUIRED_COLUMNS = ("file", "source_dataset", "patient_id", "split", "finding")


@dataclass(frozen=True)
class Film:
    """One row of a chest-film folder's metadata: where the file is, whose it is and what it shows."""

    path: Path
    source: str  # ADULT or PEDIATRIC
    label: int  # index into CXR_CLASSES
    patient_id: str
    split: str


def source_of(source_dataset: str) -> str:
    if source_dataset.startswith("NIH"):
        return ADULT
    if source_dataset.startswith("Kermany"):
        return PEDIATRIC
    raise InputError(f"source_dataset {source_dataset!r}; expected one starting with 'NIH' or 'Kermany'")


def label_of(source: str, finding: str) -> int:
    """Class index (CXR_CLASSES) of a film's finding text."""
    if source == ADULT:
        labels = set(finding.split("|"))
        if "Pneumonia" in labels:
            return 1
        if labels == {"No Finding"}:
            return 0
        raise InputError(f"NIH finding {finding!r}; expected 'No Finding' or labels that include 'Pneumonia'")
    if finding not in KERMANY_FINDINGS:
        raise InputError(f"Kermany finding {finding!r}; expected one of {sorted(KERMANY_FINDINGS)}")
    return KERMANY_FINDINGS[finding]


def read_films(root: str | Path, split: str | None = None) -> list[Film]:
    """The films of ``root/metadata.csv`` (all, or those of one ``split``), sorted by file name."""
    root = Path(root)
    meta = root / "metadata.csv"
    if not meta.is_file():
        raise InputError(f"{meta}: no such file; expected a chest-film folder with a metadata.csv")
    with open(meta, newline="") as f:
        rows = list(csv.DictReader(f))
    missing = [c for c in REQUIRED_COLUMNS if rows and c not in rows[0]]
    if not rows or missing:
        raise InputError(f"{meta}: {'no rows' if not rows else 'lacks columns ' + ', '.join(missing)}; "
                         f"expected columns {', '.join(REQUIRED_COLUMNS)}")
    films = []
    for i, r in enumerate(rows, start=2):
        if split is not None and r["split"] != split:
            continue
        try:
            source = source_of(r["source_dataset"])
            films.append(Film(root / r["file"], source, label_of(source, r["finding"]), r["patient_id"], r["split"]))
        except InputError as e:
            raise InputError(f"{meta}, line {i} ({r['file']}): {e}") from None
    return sorted(films, key=lambda f: f.path.name)


def classifier_input(films: np.ndarray | Tensor, size: int = INPUT_SIZE) -> Tensor:
    """Films [N, H, W] (or [N, 1, H, W]) in [-1, 1] -> [N, 1, size, size] float32, area-averaged (H, W multiples of size)."""
    x = torch.as_tensor(np.asarray(films, dtype=np.float32) if not isinstance(films, Tensor) else films).float()
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] != 1 or x.shape[-1] != x.shape[-2]:
        raise InputError(f"classifier_input: expected square films [N, H, W] or [N, 1, H, W], got shape {tuple(x.shape)}")
    if x.shape[-1] == size:
        return x
    if x.shape[-1] % size and size % x.shape[-1]:
        raise InputError(f"classifier_input: film size {x.shape[-1]} is neither a multiple nor a divisor of {size}")
    mode = "area" if x.shape[-1] > size else "bilinear"
    return F.interpolate(x, size=(size, size), mode=mode, **({} if mode == "area" else {"align_corners": False}))


def source_probabilities(logits: Tensor, source: str) -> Tensor:
    """Softmax over one source's classes: logits [N, 5] -> p [N, K_s], columns in SOURCE_CLASSES[source] order."""
    if source not in SOURCE_CLASSES:
        raise InputError(f"source {source!r}; expected one of {sorted(SOURCE_CLASSES)}")
    logits = torch.as_tensor(logits)
    if logits.ndim != 2 or logits.shape[1] != len(CXR_CLASSES):
        raise InputError(f"source_probabilities: expected logits [N, {len(CXR_CLASSES)}], got {tuple(logits.shape)}")
    return torch.softmax(logits[:, list(SOURCE_CLASSES[source])].double(), 1)


def within_source_labels(labels: np.ndarray | Tensor, source: str) -> np.ndarray:
    """CXR_CLASSES indices -> 0..K_s-1 within the source; InputError if a label is of the other source."""
    idx = SOURCE_CLASSES[source]
    lab = np.asarray(labels)
    if not np.isin(lab, idx).all():
        raise InputError(f"labels {sorted(set(lab.tolist()) - set(idx))} are not classes of {source} ({idx})")
    return np.searchsorted(np.asarray(idx), lab)


class ChestFilmClassifier(Classifier):
    """Findings on frontal chest films: ``clf(x)`` with x ``[B, 1, 128, 128]`` in [-1, 1] -> logits ``[B, 5]``.

    The shipped model (``ChestFilmClassifier.load()``): CXR_CLASSES, trained on the train split of the
    NIH ChestX-ray14 and Kermany films of ``../shared/data/cxr_train`` (src/meddiff/checkpoints/README.md).
    """

    DEFAULT_FILE = CLS_CXR_FILE

    def probabilities(self, x: Tensor, source: str) -> Tensor:
        """Class probabilities within ``source`` [B, K_s] (float64; see the module docstring)."""
        return source_probabilities(self(x), source)
