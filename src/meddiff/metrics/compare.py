"""Compare several methods' outputs with the ground truth: per-image metrics and table rows.

This is the library form of ``meddiff evaluate``; the demo calls :func:`evaluate_arrays`
directly with the arrays it holds in memory.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ..errors import InputError
from .image import METRIC_NAMES, image_metrics, psnr, ssim
from .stats import LEVEL, N_RESAMPLES, SEED, bootstrap_ci, paired_comparison
from .table import MetricStats, PairedRow, TableRow


def check_prediction(pred: np.ndarray, target: np.ndarray, where: str) -> None:
    """Raise InputError if ``pred`` has NaN/inf or a shape other than ``target``'s; ``where`` names it."""
    if pred.shape != target.shape:
        raise InputError(f"{where}: prediction shape {tuple(pred.shape)} differs from ground-truth shape {tuple(target.shape)}")
    if not np.all(np.isfinite(pred)):
        bad = int(np.size(pred) - np.count_nonzero(np.isfinite(pred)))
        raise InputError(f"{where}: prediction has {bad} NaN or infinite pixel(s)")


HOLE_METRICS = ("psnr_hole", "ssim_hole", "mae_hole")


def mean_absolute_error(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None) -> float:
    """MAE = sum_i m_i |pred_i - target_i| / sum_i m_i (m = 1 everywhere without a mask), in image units."""
    err = np.abs(np.asarray(pred, np.float64) - np.asarray(target, np.float64))
    if mask is None:
        return float(err.mean())
    m = np.asarray(mask) != 0
    if not m.any():
        raise InputError("MAE: the mask selects no pixel")
    return float(err[m].mean())


def hole_metrics(pred: np.ndarray, target: np.ndarray, data_range: float, hole: np.ndarray | None) -> dict[str, float]:
    """PSNR, SSIM and MAE inside an inpainting hole (``hole`` nonzero = missing pixel).

    PSNR and MAE average over the hole pixels only; SSIM averages the SSIM map of the whole
    image (Wang et al. 2004, windows straddling the border see the known pixels too) over the
    hole pixels (:func:`meddiff.metrics.image.ssim` with a mask). An image without a hole pixel
    (a slice the mask misses) gets NaN: the metric is not defined there.
    """
    if hole is None or not np.any(hole):
        return {k: float("nan") for k in HOLE_METRICS}
    m = np.asarray(hole) != 0
    return {"psnr_hole": float(psnr(pred, target, data_range, m)), "ssim_hole": float(ssim(pred, target, data_range, m)),
            "mae_hole": mean_absolute_error(pred, target, m)}


def per_image_metrics(
    preds: Mapping[str, Sequence[np.ndarray]],
    truth: Sequence[np.ndarray],
    data_range: float | Sequence[float],
    *,
    names: Sequence[str] | None = None,
    masks: Sequence[np.ndarray | None] | None = None,
    holes: Sequence[np.ndarray | None] | None = None,
) -> list[dict[str, object]]:
    """One record per (method, image): ``{"method", "image", psnr, ssim, accutance, gradient_ratio}``.

    preds:  method name -> list of ``[H, W]`` arrays, aligned with ``truth`` (same length/order).
    truth:  list of ``[H, W]`` ground-truth arrays, same intensity scale as the predictions.
    data_range: max - min of that scale (2.0 for [-1, 1]); or one range per image (e.g. each image's
            own max - min, when the set mixes modalities such as CT and MR).
    names:  image identifiers for the records (default "0", "1", ...).
    masks:  optional per-image masks restricting every metric to their pixels.
    holes:  optional per-image inpainting holes (nonzero = missing): adds psnr_hole, ssim_hole,
            mae_hole (:func:`hole_metrics`; NaN for an image without hole pixels).
    """
    names = [str(i) for i in range(len(truth))] if names is None else list(names)
    if holes is not None and len(holes) != len(truth):
        raise InputError(f"got {len(truth)} ground-truth images but {len(holes)} hole masks")
    if len(names) != len(truth) or (masks is not None and len(masks) != len(truth)):
        raise InputError(f"got {len(truth)} ground-truth images but {len(names)} names / {len(masks) if masks is not None else 0} masks")
    ranges = [float(data_range)] * len(truth) if np.ndim(data_range) == 0 else [float(r) for r in data_range]  # type: ignore[arg-type]
    if len(ranges) != len(truth):
        raise InputError(f"got {len(truth)} ground-truth images but {len(ranges)} data ranges")
    records: list[dict[str, object]] = []
    for method, images in preds.items():
        if len(images) != len(truth):
            raise InputError(f"method {method!r} has {len(images)} images, ground truth has {len(truth)}")
        for i, (p, t) in enumerate(zip(images, truth)):
            p, t = np.asarray(p, dtype=np.float64), np.asarray(t, dtype=np.float64)
            check_prediction(p, t, f"{method} / {names[i]}")
            m = None if masks is None else masks[i]
            rec = {"method": method, "image": names[i], **image_metrics(p, t, ranges[i], m)}
            if holes is not None:
                rec.update(hole_metrics(p, t, ranges[i], holes[i]))
            records.append(rec)
    return records


NON_METRIC_KEYS = ("method", "image", "patient")


def _methods(records: Sequence[Mapping[str, object]]) -> list[str]:
    methods: list[str] = []
    for r in records:
        if r["method"] not in methods:
            methods.append(str(r["method"]))
    return methods


def metric_keys(records: Sequence[Mapping[str, object]]) -> list[str]:
    """Metric names of the records: the known ones in METRIC_NAMES order, then others first-seen."""
    keys = [k for k in METRIC_NAMES if records and k in records[0]]
    return keys + [k for k in (records[0] if records else {}) if k not in keys and k not in NON_METRIC_KEYS]


def rows_from_records(records: Sequence[Mapping[str, object]], *, ci: bool = False,
                      patients: Sequence[object] | None = None, n_resamples: int = N_RESAMPLES, seed: int = SEED,
                      level: float = LEVEL) -> list[TableRow]:
    """Summarise per-image records into one :class:`TableRow` per method (first-seen method order).

    ci:       also attach a bootstrap CI of each mean (:func:`meddiff.metrics.stats.bootstrap_ci`),
              resampling ``patients`` (one id per image, aligned with each method's records in
              order; None: resample images). Metrics with non-finite values (PSNR of identical
              images) get no interval.
    A NaN value means "not defined for this image" (a hole metric on a slice without a hole,
    Dice of a class absent from both segmentations): such images are left out of that metric's
    mean, n and interval.
    """
    keys = metric_keys(records)
    rows = []
    for m in _methods(records):
        recs = [r for r in records if r["method"] == m]
        if ci and patients is not None and len(patients) != len(recs):
            raise InputError(f"method {m!r} has {len(recs)} images but {len(patients)} patient ids were given")
        stats: dict[str, MetricStats] = {}
        for k in keys:
            v = np.array([float(r[k]) if r.get(k) not in (None, "") else np.nan for r in recs])
            defined = ~np.isnan(v)  # NaN = not defined for this image (e.g. no hole pixel): left out
            if not defined.any():
                continue
            vd = v[defined]
            std = float(np.std(vd, ddof=1)) if vd.size > 1 else 0.0
            s = MetricStats(float(np.mean(vd)), std, int(vd.size))
            if ci and np.all(np.isfinite(vd)):
                pid = None if patients is None else [p for p, d in zip(patients, defined) if d]
                b = bootstrap_ci(vd, pid, n_resamples=n_resamples, seed=seed, level=level)
                s = MetricStats(s.mean, s.std, s.n, b.lo, b.hi)
            stats[k] = s
        rows.append(TableRow(m, stats))
    return rows


def paired_rows(records: Sequence[Mapping[str, object]], reference: str, *, patients: Sequence[object] | None = None,
                metrics: Sequence[str] | None = None, n_resamples: int = N_RESAMPLES, seed: int = SEED,
                level: float = LEVEL) -> list[PairedRow]:
    """Every other method minus ``reference``, image by image, for each per-image metric
    (:func:`meddiff.metrics.stats.paired_comparison`; same resamples for every comparison).

    Records of each method must list the same images in the same order (as
    :func:`per_image_metrics` makes them); metrics with non-finite values are skipped.
    """
    methods = _methods(records)
    if reference not in methods:
        raise InputError(f"reference method {reference!r} is not among the methods {methods}")
    by = {m: [r for r in records if r["method"] == m] for m in methods}
    ref = by[reference]
    keys = list(metrics) if metrics is not None else metric_keys(records)
    out = []
    for m in methods:
        if m == reference:
            continue
        if [r["image"] for r in by[m]] != [r["image"] for r in ref]:
            raise InputError(f"methods {m!r} and {reference!r} were not scored on the same images; cannot pair them")
        for k in keys:
            a = np.array([float(r[k]) if r.get(k) not in (None, "") else np.nan for r in by[m]])
            b = np.array([float(r[k]) if r.get(k) not in (None, "") else np.nan for r in ref])
            both = ~(np.isnan(a) | np.isnan(b))  # images where the metric is defined for both
            a, b = a[both], b[both]
            if a.size and np.all(np.isfinite(a)) and np.all(np.isfinite(b)):
                pid = None if patients is None else [p for p, d in zip(patients, both) if d]
                res = paired_comparison(a, b, pid, n_resamples=n_resamples, seed=seed, level=level)
                out.append(PairedRow(m, reference, k, res))
    return out


def evaluate_arrays(
    preds: Mapping[str, Sequence[np.ndarray]],
    truth: Sequence[np.ndarray],
    data_range: float,
    *,
    names: Sequence[str] | None = None,
    masks: Sequence[np.ndarray | None] | None = None,
    ci: bool = False,
    patients: Sequence[object] | None = None,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> list[TableRow]:
    """Table rows (one per method, in ``preds`` order) of mean ± std metrics over the images.

    Same arguments as :func:`per_image_metrics`; with ``ci=True`` each mean also gets a
    bootstrap 95% CI resampling ``patients`` (one id per image; None: the images), see
    :func:`rows_from_records`. Write them with :func:`meddiff.metrics.table.write_table` or
    render them with :func:`to_markdown`.
    """
    records = per_image_metrics(preds, truth, data_range, names=names, masks=masks)
    return rows_from_records(records, ci=ci, patients=patients, n_resamples=n_resamples, seed=seed)
