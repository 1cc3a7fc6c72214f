"""Scores of the downstream tasks: Dice overlap of label maps and top-1 accuracy of logits.

Dice (Dice 1945; Sorensen 1948) of one class k in one image, with A = {pred == k}, B = {ref == k}:

    D_k = 2 |A ∩ B| / (|A| + |B|),        and D_k = 1 when |A| = |B| = 0

Convention for a class absent from both images: Dice 1.0 (the two maps agree perfectly that
the class is not there), so every entry is finite and a mean over classes or images never
drops terms.
"""

from __future__ import annotations

from typing import Sequence

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
