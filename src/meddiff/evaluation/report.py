"""Scoring evaluation groups and writing their tables and HTML reports: `evaluate(request)` is what
`meddiff evaluate` calls (an EvaluationRequest: what to score and how, evaluation.request)."""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..baselines.interpolation import interpolate_baseline
from ..errors import FieldError, InputError
from ..io.outdir import mark
from ..metrics.compare import paired_rows, per_image_metrics, rows_from_records
from ..metrics.table import (LABELS, MetricStats, TableRow, metric_columns, paired_to_markdown, to_markdown, write_long_csv,
                             write_paired_table, write_per_image_csv, write_simple_table, write_table)
from .collect import Collected, collect
from .pairing import GroupSpec, group_factor, parse_groups
from .request import EvaluationRequest
from .scores import (CALIB_HEADER, calibration_rows, ci_notes, classifier_scores, dice_scores, fid_kid, import_downstream,
                     lpips_scores, model_path, read_labels_csv)

log = logging.getLogger(__name__)


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


def _with_set_metrics(rows: list[TableRow], sets: dict, n: int) -> list[TableRow]:
    """The table rows with each method's set-level FID and KID (from `fid_kid`, over `n` images) added, their
    CIs NaN when there was no set bootstrap."""
    out = []
    for r in rows:
        fid, kid, kid_std, b = sets[r.method]
        ci_f = (b.fid_lo, b.fid_hi) if b is not None else (math.nan, math.nan)
        ci_k = (b.kid_lo, b.kid_hi) if b is not None else (math.nan, math.nan)
        out.append(TableRow(r.method, {**r.metrics, "fid": MetricStats(fid, math.nan, n, *ci_f),
                                       "kid": MetricStats(kid, kid_std, n, *ci_k)}))
    return out


def score_group(args: EvaluationRequest, g: GroupSpec, out: Path, suffix: str, downstream: dict[str, object]) -> GroupResult:
    """Score one group and write its tables (results<suffix>.*, paired<suffix>.*, per_image<suffix>.csv, calibration<suffix>.*)."""
    c = collect(args, g)
    reference = args.reference if args.reference is not None else c.methods[0]
    if reference not in c.preds:
        raise FieldError("reference", text=f"{{reference}} {reference!r} is not one of the methods {list(c.preds)}"
                         + (f" of group {g.name!r}" if g.name else ""))
    progress = args.progress
    ranges = c.ranges if c.per_image else c.data_range
    records = per_image_metrics(c.preds, c.truths, ranges, names=c.names, holes=c.holes)
    notes = list(c.notes)
    labels: dict[str, str] = {}
    if args.lpips != "none":
        scores, note, label = lpips_scores(c, args.lpips, args.lpips_backbone, progress, device=_device(args))
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
        sets, fid_notes = fid_kid(c, progress, args.seed, args.set_bootstrap, device=_device(args))
        notes += fid_notes
        if sets is not None:
            rows = _with_set_metrics(rows, sets, len(c.truths))
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


def load_downstream(args: EvaluationRequest) -> dict[str, object]:
    """The requested downstream models: {"segmenter": (seg, dice), "classifier": clf, "skipped": [messages]}."""
    out: dict[str, object] = {"skipped": []}
    if args.seg_labels and args.segmenter is None:
        raise FieldError("seg_labels", text="{seg_labels} needs {segmenter} [FILE]")
    if args.labels is not None and args.classifier is None:
        raise FieldError("labels", text="{labels} needs {classifier} [FILE]")
    if args.classifier is not None and args.labels is None:
        raise FieldError("classifier", text="{classifier} needs {labels} CSV (columns case, label) to score accuracy")
    if args.segmenter is not None:
        path = model_path("segmenter", args.segmenter)
        got = import_downstream("--segmenter", ("Segmenter", "dice"))
        if isinstance(got, str):
            out["skipped"].append(got)  # type: ignore[union-attr]
            log.error("%s", got)
        else:
            out["segmenter"] = (got[0].load(path), got[1])  # type: ignore[attr-defined]
    if args.classifier is not None:
        path = model_path("classifier", args.classifier)
        got = import_downstream("--classifier", ("Classifier",))
        if isinstance(got, str):
            out["skipped"].append(got)  # type: ignore[union-attr]
            log.error("%s", got)
        else:
            out["classifier"] = got[0].load(path)  # type: ignore[attr-defined]
    return out


def _with_patients(records: list[dict[str, object]], c: Collected) -> list[dict[str, object]]:
    """Records with a ``patient`` column (records of each method follow the image order)."""
    patient = dict(zip(c.names, c.patients))
    return [{"method": r["method"], "image": r["image"], "patient": patient[str(r["image"])],
             **{k: v for k, v in r.items() if k not in ("method", "image")}} for r in records]


def factor_plots(out: Path, results: dict[str, GroupResult], factors: dict[str, float | None]) -> dict[str, Path]:
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


def write_report(path: Path, c: Collected, table_md: str, extra_tables: dict[str, str], notes: list[str], k: int) -> None:
    """report.html: the table with CIs, the paired comparisons (and calibration), notes, and ``k`` evenly spaced images
    with their error maps (and predicted std maps when the methods have them)."""
    from ..metrics.report import write_html_report

    rows, labels, stds = _image_rows(c, k)
    write_html_report(path, title=f"meddiff evaluate: {', '.join(c.preds)}", rows_of_images=rows, row_labels=labels,
                      window=c.window, table_markdown=table_md, notes=notes, extra_tables=extra_tables or None,
                      std_maps=stds if c.stds else None)


def write_multi_report(path: Path, results: dict[str, GroupResult], plots: dict[str, Path], k: int) -> None:
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


def check_options(args: EvaluationRequest) -> None:
    """InputError naming the option when the evaluation options cannot work together."""
    if not args.pred or not args.truth:
        raise FieldError("pred", text="{pred} and {truth} are required (or {likelihood} {checkpoint} CKPT {prepared} DIR)")
    if args.bootstrap < 100:
        raise FieldError("bootstrap", text=f"{{bootstrap}} must be at least 100 resamples for a 95% interval, got {args.bootstrap}")
    if args.set_bootstrap != 0 and args.set_bootstrap < 20:
        raise FieldError("set_bootstrap", text=f"{{set_bootstrap}} must be 0 (no FID/KID CI) or at least 20 resamples, got {args.set_bootstrap}")
    if args.lpips == "alex" and args.lpips_backbone is None:
        raise FieldError("lpips", text="{lpips} alex needs {lpips_backbone} FILE (a local torchvision alexnet state dict); "
                         "or use {lpips} alex-st, whose weights ship in stlpips-pytorch")


def _device(args: EvaluationRequest):
    """The device of the metric networks (LPIPS, Inception): the request's (cpu, cuda, cuda:N or a
    torch.device; `meddiff evaluate --device auto` is resolved by the command)."""
    import torch

    return torch.device(args.device or "cpu")


def claim_output(out: Path, groups: list[GroupSpec], overwrite: bool) -> None:
    """The output folder is none of the inputs and, when not empty, meddiff's and --overwrite is given
    (writes nothing: score_group marks the folder at its first write)."""
    from ..io.outdir import check_output_dir

    inputs = [p for g in groups for p in (*(d for _, d in g.methods), g.truth, g.input, g.mask, g.seg_labels)]
    check_output_dir(out, inputs, overwrite=overwrite, verb="evaluate")


def evaluate(args: EvaluationRequest) -> tuple[dict[str, GroupResult], Path]:
    """Score every group of `args` (the options of `meddiff evaluate`), write the tables, plots and
    report.html; returns (results by group name, "" when there are no groups; the output folder)."""
    check_options(args)
    groups = parse_groups(args)
    downstream = load_downstream(args)
    multi = groups[0].name != ""
    out = args.out if args.out is not None else groups[0].methods[0][1].resolve().parent / "evaluation"
    claim_output(out, groups, args.overwrite)
    results = {g.name: score_group(args, g, out, f"_{g.name}" if multi else "", downstream) for g in groups}
    if multi:
        factors = {g: group_factor(g) for g in results}
        write_long_csv(out / "results_long.csv", {g: r.rows for g, r in results.items()},
                       {g: f for g, f in factors.items() if f is not None})
        plots = factor_plots(out, results, factors)
        write_multi_report(out / "report.html", results, plots, args.report_images)
        log.info("wrote results_<group>.{md,csv,tex}, paired_<group>.*, results_long.csv, plots/ and report.html to %s", out)
    else:
        res = results[""]
        extra = {f"Paired comparisons (vs {res.reference})": res.paired_md} if res.paired_md else {}
        if res.calib_md:
            extra["Uncertainty calibration"] = res.calib_md
        write_report(out / "report.html", res.c, to_markdown(res.rows, res.labels), extra, res.notes, args.report_images)
        log.info("wrote results.{md,csv,tex}, paired.{md,csv,tex}, per_image.csv and report.html to %s", out)
    return results, out
