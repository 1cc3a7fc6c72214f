"""Scores of the downstream tasks: Dice overlap of label maps and top-1 accuracy of logits.

Dice (Dice 1945; Sorensen 1948) of one class k in one image, with A = {pred == k}, B = {ref == k}:

    D_k = 2 |A ∩ B| / (|A| + |B|),        and D_k = 1 when |A| = |B| = 0

Convention for a class absent from both images: Dice 1.0 (the two maps agree perfectly that
the class is not there), so every entry is finite and a mean over classes or images never
drops terms.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError

EMPTY_DICE = 1.0  # Dice of a class absent from both prediction and reference


def _check_labels(pred: Tensor, ref: Tensor, n_classes: int) -> None:
    if pred.shape != ref.shape:
        raise InputError(f"dice: pred has shape {tuple(pred.shape)} but ref has {tuple(ref.shape)}; expected equal [B, H, W]")
    if pred.ndim < 2:
        raise InputError(f"dice: expected label maps [B, H, W] (or [B, ...]), got shape {tuple(pred.shape)}")
    if pred.is_floating_point() or ref.is_floating_point():
        raise InputError(f"dice: expected integer label maps, got dtypes {pred.dtype} and {ref.dtype}")
    if n_classes < 1:
        raise InputError(f"dice: n_classes = {n_classes}; expected at least 1")
    for name, t in (("pred", pred), ("ref", ref)):
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= n_classes):
            raise InputError(f"dice: {name} has labels in [{int(t.min())}, {int(t.max())}]; expected 0..{n_classes - 1}")


def dice(pred: Tensor, ref: Tensor, n_classes: int, ignore: Sequence[int] = (0,)) -> Tensor:
    """Dice per image and per kept class: D_k = 2 |A ∩ B| / (|A| + |B|) (1.0 if both are empty).

    pred, ref: integer label maps ``[B, H, W]`` (any trailing spatial shape) with values 0..n_classes-1.
    ignore:    classes left out (default: class 0, the background).
    Returns float64 ``[B, K']``, K' = n_classes - len(ignore), classes in increasing order.
    """
    pred, ref = torch.as_tensor(pred), torch.as_tensor(ref)
    _check_labels(pred, ref, n_classes)
    kept = [k for k in range(n_classes) if k not in set(int(i) for i in ignore)]
    if not kept:
        raise InputError(f"dice: ignore={tuple(ignore)} leaves no class of {n_classes}")
    p, r = pred.flatten(1), ref.flatten(1)
    cols = []
    for k in kept:
        a, b = p == k, r == k
        inter = (a & b).sum(1, dtype=torch.float64)
        size = a.sum(1, dtype=torch.float64) + b.sum(1, dtype=torch.float64)
        cols.append(torch.where(size > 0, 2.0 * inter / size.clamp(min=1.0), torch.full_like(size, EMPTY_DICE)))
    return torch.stack(cols, 1)


def mean_dice(pred: Tensor, ref: Tensor, n_classes: int, ignore: Sequence[int] = (0,)) -> Tensor:
    """Mean over the kept classes of :func:`dice`: float64 ``[B]`` (one value per image)."""
    return dice(pred, ref, n_classes, ignore).mean(1)


def accuracy(logits: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy: the fraction of rows whose largest logit is at the label's index.

    logits: ``[B, K]`` float; labels: ``[B]`` integer class indices in 0..K-1.
    """
    logits, labels = torch.as_tensor(logits), torch.as_tensor(labels)
    if logits.ndim != 2 or labels.ndim != 1 or labels.shape[0] != logits.shape[0] or logits.shape[0] == 0:
        raise InputError(f"accuracy: expected logits [B, K] and labels [B] with B > 0, got {tuple(logits.shape)} and {tuple(labels.shape)}")
    if labels.is_floating_point() or int(labels.min()) < 0 or int(labels.max()) >= logits.shape[1]:
        raise InputError(f"accuracy: labels must be integers in 0..{logits.shape[1] - 1}, got dtype {labels.dtype} "
                         f"range [{labels.min().item()}, {labels.max().item()}]")
    return float((logits.argmax(1) == labels).double().mean())


def auroc(scores, positive) -> float:
    """Area under the ROC curve of ``scores`` [N] for the binary labels ``positive`` [N] (bool).

    The Mann-Whitney form (Hanley and McNeil 1982): with r_i the mid-ranks of the scores (ties share
    their mean rank), n1 positives and n0 negatives, AUC = (sum_{i positive} r_i - n1 (n1 + 1) / 2) / (n1 n0),
    the probability that a random positive scores above a random negative (ties count 1/2).
    """
    from scipy.stats import rankdata

    s = np.asarray(scores, dtype=np.float64).ravel()
    pos = np.asarray(positive, dtype=bool).ravel()
    if s.shape != pos.shape or not np.all(np.isfinite(s)):
        raise InputError(f"auroc: expected finite scores and labels of one length, got {s.shape} and {pos.shape}")
    n1, n0 = int(pos.sum()), int((~pos).sum())
    if n1 == 0 or n0 == 0:
        raise InputError(f"auroc: needs positives and negatives, got {n1} positive and {n0} negative")
    r = rankdata(s)
    return float((r[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def macro_auroc(probs, labels) -> float:
    """One-vs-rest AUROC averaged over classes: probs [N, K], labels [N] in 0..K-1 (K = 2: the AUROC of column 1).

    Every class must occur in ``labels`` (else InputError: the macro average would change meaning).
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels).ravel()
    if p.ndim != 2 or p.shape[0] != y.shape[0] or p.shape[1] < 2:
        raise InputError(f"macro_auroc: expected probs [N, K >= 2] and labels [N], got {p.shape} and {y.shape}")
    if p.shape[1] == 2:
        return auroc(p[:, 1], y == 1)
    return float(np.mean([auroc(p[:, k], y == k) for k in range(p.shape[1])]))
