"""Compare several methods' outputs with the ground truth: per-image metrics and table rows.

This is the library form of ``meddiff evaluate``; the demo calls :func:`evaluate_arrays`
directly with the arrays it holds in memory.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ..errors import InputError
from .image import METRIC_NAMES, image_metrics
from .table import TableRow, summarize


def check_prediction(pred: np.ndarray, target: np.ndarray, where: str) -> None:
    """Raise InputError if ``pred`` has NaN/inf or a shape other than ``target``'s; ``where`` names it."""
    if pred.shape != target.shape:
        raise InputError(f"{where}: prediction shape {tuple(pred.shape)} differs from ground-truth shape {tuple(target.shape)}")
    if not np.all(np.isfinite(pred)):
        bad = int(np.size(pred) - np.count_nonzero(np.isfinite(pred)))
        raise InputError(f"{where}: prediction has {bad} NaN or infinite pixel(s)")


def per_image_metrics(
    preds: Mapping[str, Sequence[np.ndarray]],
    truth: Sequence[np.ndarray],
    data_range: float,
    *,
    names: Sequence[str] | None = None,
    masks: Sequence[np.ndarray | None] | None = None,
) -> list[dict[str, object]]:
    """One record per (method, image): ``{"method", "image", psnr, ssim, accutance, gradient_ratio}``.

    preds:  method name -> list of ``[H, W]`` arrays, aligned with ``truth`` (same length/order).
    truth:  list of ``[H, W]`` ground-truth arrays, same intensity scale as the predictions.
    data_range: max - min of that scale (2.0 for [-1, 1]).
    names:  image identifiers for the records (default "0", "1", ...).
    masks:  optional per-image masks restricting every metric to their pixels.
    """
    names = [str(i) for i in range(len(truth))] if names is None else list(names)
    if len(names) != len(truth) or (masks is not None and len(masks) != len(truth)):
        raise InputError(f"got {len(truth)} ground-truth images but {len(names)} names / {len(masks) if masks is not None else 0} masks")
    records: list[dict[str, object]] = []
    for method, images in preds.items():
        if len(images) != len(truth):
            raise InputError(f"method {method!r} has {len(images)} images, ground truth has {len(truth)}")
        for i, (p, t) in enumerate(zip(images, truth)):
            p, t = np.asarray(p, dtype=np.float64), np.asarray(t, dtype=np.float64)
            check_prediction(p, t, f"{method} / {names[i]}")
            m = None if masks is None else masks[i]
            records.append({"method": method, "image": names[i], **image_metrics(p, t, data_range, m)})
    return records


def rows_from_records(records: Sequence[Mapping[str, object]]) -> list[TableRow]:
    """Summarise per-image records into one :class:`TableRow` per method (first-seen method order)."""
    methods: list[str] = []
    for r in records:
        if r["method"] not in methods:
            methods.append(str(r["method"]))
    keys = [k for k in METRIC_NAMES if records and k in records[0]]
    keys += [k for k in (records[0] if records else {}) if k not in keys and k not in ("method", "image")]
    return [summarize(m, [r for r in records if r["method"] == m], keys) for m in methods]


def evaluate_arrays(
    preds: Mapping[str, Sequence[np.ndarray]],
    truth: Sequence[np.ndarray],
    data_range: float,
    *,
    names: Sequence[str] | None = None,
    masks: Sequence[np.ndarray | None] | None = None,
) -> list[TableRow]:
    """Table rows (one per method, in ``preds`` order) of mean ± std metrics over the images.

    Same arguments as :func:`per_image_metrics`. Write them with
    :func:`meddiff.metrics.table.write_table` or render them with :func:`to_markdown`.
    """
    return rows_from_records(per_image_metrics(preds, truth, data_range, names=names, masks=masks))
