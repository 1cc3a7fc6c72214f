"""Result tables: one row per method, one column per metric (mean ± std over images, n).

Rows are :class:`TableRow` values; they are written as Markdown (for people, the README and
the HTML report), CSV (full precision, for programs) and optionally LaTeX (booktabs, for
papers), all atomically. Column order is stable: the known metrics in :data:`METRIC_ORDER`,
then any others in first-seen order. A metric with a confidence interval (``MetricStats.lo``
and ``.hi``, see :mod:`meddiff.metrics.stats`) is shown as "mean [lo, hi]", else "mean ± std".
The paired-comparison table (method minus reference) is rendered here too.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

from ..errors import InputError
from ..io.atomic import atomic_write_text
from .image import METRIC_NAMES, aggregate

if TYPE_CHECKING:
    from .stats import PairedResult

METRIC_ORDER = METRIC_NAMES  # psnr, ssim, accutance, gradient_ratio

LABELS = {
    "psnr": "PSNR (dB) ↑",
    "ssim": "SSIM ↑",
    "accutance": "accutance (sharpness)",
    "gradient_ratio": "gradient ratio (1 = truth)",
    "fid": "FID ↓",
    "kid": "KID ↓",
    "psnr_hole": "PSNR in hole (dB) ↑",
    "ssim_hole": "SSIM in hole ↑",
    "mae_hole": "MAE in hole ↓",
    "dice": "Dice ↑",
    "accuracy": "accuracy ↑",
}
FORMATS = {"psnr": ".2f", "ssim": ".4f", "accutance": ".2f", "gradient_ratio": ".3f", "fid": ".2f",
           "kid": ".4f", "psnr_hole": ".2f", "ssim_hole": ".4f", "mae_hole": ".4g", "dice": ".4f", "accuracy": ".3f"}
# A metric named "<base>:<part>" (e.g. "dice:liver", Dice of one class) is a detail: written to
# the CSV files, left out of the Markdown and LaTeX tables (their "<base>" column summarises it).
DETAIL_SEPARATOR = ":"
DEFAULT_FORMAT = ".4g"
# cells with an interval use fixed decimals so mean, lo and hi line up
CI_FORMATS = {**FORMATS, "lpips": ".4f"}

# Which value of a metric is best: "higher", "lower", or a target number (closest wins).
# Metrics not listed (accutance: sharper is not better when it is noise) are never marked best.
BETTER: dict[str, str | float] = {"psnr": "higher", "ssim": "higher", "lpips": "lower", "fid": "lower", "kid": "lower",
                                  "gradient_ratio": 1.0, "psnr_hole": "higher", "ssim_hole": "higher", "mae_hole": "lower",
                                  "dice": "higher", "accuracy": "higher"}


@dataclass(frozen=True)
class MetricStats:
    """Summary of one metric over the images of one method."""

    mean: float
    std: float  # sample standard deviation (ddof=1), 0 for a single image; nan for set-level metrics (FID)
    n: int
    lo: float = math.nan  # confidence interval of the mean (nan: none), e.g. per-patient bootstrap 95%
    hi: float = math.nan

    @property
    def has_ci(self) -> bool:
        return not (math.isnan(self.lo) or math.isnan(self.hi))


@dataclass(frozen=True)
class TableRow:
    """One method's line in the results table."""

    method: str
    metrics: Mapping[str, MetricStats]

    @property
    def n(self) -> int:
        """Number of images (the largest count over metrics)."""
        return max((s.n for s in self.metrics.values()), default=0)


def summarize(method: str, per_image: Sequence[Mapping[str, float]], keys: Sequence[str] | None = None) -> TableRow:
    """A :class:`TableRow` from per-image metric dicts (see :func:`meddiff.metrics.image.aggregate`)."""
    stats = aggregate(per_image, keys)
    return TableRow(method, {k: MetricStats(v["mean"], v["std"], v["n"]) for k, v in stats.items()})


def metric_columns(rows: Iterable[TableRow], details: bool = True) -> list[str]:
    """Metric names present in ``rows``: those of METRIC_ORDER first, then others in first-seen order;
    without ``details``, names holding :data:`DETAIL_SEPARATOR` are left out."""
    seen: list[str] = []
    for row in rows:
        seen.extend(k for k in row.metrics if k not in seen and (details or DETAIL_SEPARATOR not in k))
    return [k for k in METRIC_ORDER if k in seen] + [k for k in seen if k not in METRIC_ORDER]


def too_few(name: str, s: MetricStats) -> bool:
    """True for an estimate that only says the sample was too small: a negative KID (the unbiased
    MMD² estimate goes below 0 when the true value is near 0 and n is small; KID itself is >= 0)."""
    return name == "kid" and s.mean < 0


def _cell(name: str, s: MetricStats | None) -> str:
    if s is None:
        return ""
    fmt = (CI_FORMATS if s.has_ci else FORMATS).get(name, DEFAULT_FORMAT)
    if too_few(name, s):
        return f"n too small ({format(s.mean, fmt)} < 0)"
    if s.has_ci:
        return f"{format(s.mean, fmt)} [{format(s.lo, fmt)}, {format(s.hi, fmt)}]"
    if math.isnan(s.std) or s.n < 2:
        return format(s.mean, fmt)
    return f"{format(s.mean, fmt)} ± {format(s.std, fmt)}"


def best_methods(rows: Sequence[TableRow], metric: str) -> set[str]:
    """Methods whose mean of ``metric`` is best by :data:`BETTER` (ties all count; empty if the
    direction is unknown or fewer than two rows have a finite value)."""
    rule = BETTER.get(metric)
    vals = {r.method: r.metrics[metric].mean for r in rows if metric in r.metrics and math.isfinite(r.metrics[metric].mean)
            and not too_few(metric, r.metrics[metric])}
    if rule is None or len(vals) < 2:
        return set()
    score = {m: (-v if rule == "higher" else v if rule == "lower" else abs(v - float(rule))) for m, v in vals.items()}
    top = min(score.values())
    return {m for m, v in score.items() if v == top}


def to_markdown(rows: Sequence[TableRow], labels: Mapping[str, str] | None = None) -> str:
    """A GitHub pipe table: ``| method | n | <metric> ... |``, cells "mean [lo, hi]" or "mean ± std".

    labels: header text per metric, overriding :data:`LABELS` (e.g. the LPIPS variant).
    Detail metrics ("<base>:<part>") are left out (they are in the CSV).
    """
    cols = metric_columns(rows, details=False)
    lab = {**LABELS, **(labels or {})}
    header = ["method", "n"] + [lab.get(c, c) for c in cols]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for row in rows:
        cells = [row.method.replace("|", "/"), str(row.n)] + [_cell(c, row.metrics.get(c)) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_LATEX_SYMBOLS = {"↑": r"$\uparrow$", "↓": r"$\downarrow$", "±": r"$\pm$", "−": "-", "Δ": r"$\Delta$", "·": r"$\cdot$"}


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped and arrows / ± as math symbols."""
    out = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))
    for k, v in _LATEX_SYMBOLS.items():
        out = out.replace(k, v)
    return out


def _latex_tabular(header: Sequence[str], body: Sequence[Sequence[str]], align: str, notes: Sequence[str]) -> str:
    """A booktabs tabular (cells already escaped), preceded by ``notes`` as ``%`` comment lines."""
    lines = ["% " + n.replace("\n", " ") for n in notes]
    lines += [f"\\begin{{tabular}}{{{align}}}", "\\toprule", " & ".join(header) + r" \\", "\\midrule"]
    lines += [" & ".join(r) + r" \\" for r in body]
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def to_latex(rows: Sequence[TableRow], labels: Mapping[str, str] | None = None, notes: Sequence[str] = ()) -> str:
    """The table as a booktabs ``tabular`` (needs ``\\usepackage{booktabs}``): cells "mean [lo, hi]"
    (or "mean ± std"), the best value of each column with a known direction (:data:`BETTER`) in
    bold; ``notes`` become ``%`` comments above it. Detail metrics are left out."""
    cols = metric_columns(rows, details=False)
    lab = {**LABELS, **(labels or {})}
    header = ["method", "$n$"] + [latex_escape(lab.get(c, c)) for c in cols]
    best = {c: best_methods(rows, c) for c in cols}
    body = []
    for row in rows:
        cells = [latex_escape(row.method), str(row.n)]
        for c in cols:
            cell = latex_escape(_cell(c, row.metrics.get(c)))
            cells.append(f"\\textbf{{{cell}}}" if cell and row.method in best[c] else cell)
        body.append(cells)
    return _latex_tabular(header, body, "l" + "r" * (len(header) - 1), notes)


def parse_markdown_table(text: str) -> tuple[list[str], list[list[str]]]:
    """Header and body cells of the first pipe table in ``text`` (alignment line skipped)."""
    lines = [ln.strip() for ln in text.splitlines()]
    table = []
    for ln in lines:
        if ln.startswith("|") and ln.endswith("|"):
            table.append([c.strip() for c in ln[1:-1].split("|")])
        elif table:
            break
    if len(table) < 2:
        raise InputError("no Markdown pipe table found (need a header line and a ---|--- line)")
    return table[0], [r for r in table[2:]]


def to_csv(rows: Sequence[TableRow]) -> str:
    """CSV with columns ``method, n, <metric>_mean, <metric>_std, ...`` at full precision, plus
    ``<metric>_ci_lo, <metric>_ci_hi`` after them when any row has confidence intervals."""
    cols = metric_columns(rows)
    with_ci = any(s.has_ci for r in rows for s in r.metrics.values())
    parts = ("mean", "std", "ci_lo", "ci_hi") if with_ci else ("mean", "std")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["method", "n"] + [f"{c}_{p}" for c in cols for p in parts])
    for row in rows:
        vals: list[str] = []
        for c in cols:
            s = row.metrics.get(c)
            if s is None:
                vals += [""] * len(parts)
            else:
                vals += [repr(s.mean), repr(s.std)] + ([repr(s.lo), repr(s.hi)] if with_ci else [])
        w.writerow([row.method, row.n] + vals)
    return buf.getvalue()


def read_csv(path: str | Path) -> list[TableRow]:
    """Rows back from a CSV written by :func:`to_csv` / :func:`write_table`."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        if fields[:2] != ["method", "n"]:
            raise InputError(f"{path}: expected columns 'method, n, <metric>_mean, <metric>_std, ...', got {fields}")
        names = [f[: -len("_mean")] for f in fields[2:] if f.endswith("_mean")]
        rows = []
        for rec in reader:
            n = int(rec["n"])
            metrics = {}
            for k in names:
                if rec[f"{k}_mean"] == "":
                    continue
                ci = [float(rec[f"{k}_ci_{e}"]) if rec.get(f"{k}_ci_{e}") not in (None, "") else math.nan for e in ("lo", "hi")]
                metrics[k] = MetricStats(float(rec[f"{k}_mean"]), float(rec[f"{k}_std"]), n, *ci)
            rows.append(TableRow(rec["method"], metrics))
    return rows


def write_table(rows: Sequence[TableRow], md_path: str | Path, csv_path: str | Path, *, notes: Sequence[str] = (),
                latex_path: str | Path | None = None, labels: Mapping[str, str] | None = None) -> str:
    """Write ``rows`` as Markdown (table, then ``notes`` as bullet lines), CSV and, with
    ``latex_path``, LaTeX (:func:`to_latex`, notes as comments), each atomically.

    Returns the Markdown text that was written.
    """
    md = to_markdown(rows, labels)
    if notes:
        md += "\n" + "".join(f"- {n}\n" for n in notes)
    atomic_write_text(md_path, md)
    atomic_write_text(csv_path, to_csv(rows))
    if latex_path is not None:
        atomic_write_text(latex_path, to_latex(rows, labels, notes))
    return md


# --------------------------------------------------------------------------- paired comparisons

@dataclass(frozen=True)
class PairedRow:
    """One line of the paired table: ``method`` minus ``reference`` on ``metric`` over the same images."""

    method: str
    reference: str
    metric: str
    result: "PairedResult"


def _favours(row: PairedRow) -> str:
    """Which side the CI of the difference supports: the method, the reference, or neither."""
    d, rule = row.result.diff, BETTER.get(row.metric)
    if rule not in ("higher", "lower"):
        return "n/a (no better direction)"
    if d.lo <= 0 <= d.hi:
        return "neither (CI contains 0)"
    method_higher = d.lo > 0
    return row.method if method_higher == (rule == "higher") else row.reference


def _p_text(p: float) -> str:
    if math.isnan(p):
        return "n/a (all differences 0)"
    return f"{p:.2e}" if p < 1e-3 else f"{p:.3f}"


def _paired_cells(row: PairedRow, labels: Mapping[str, str]) -> list[str]:
    r, fmt = row.result, CI_FORMATS.get(row.metric, DEFAULT_FORMAT)
    return [f"{row.method} − {row.reference}", labels.get(row.metric, row.metric), str(r.diff.n_images),
            f"{r.diff.n_clusters} {r.diff.unit}",
            f"{format(r.diff.mean, '+' + fmt)} [{format(r.diff.lo, '+' + fmt)}, {format(r.diff.hi, '+' + fmt)}]",
            _p_text(r.p_value), f"{r.n_test} {r.test_unit}", _favours(row)]


PAIRED_HEADER = ["comparison", "metric", "n", "resampled", "mean Δ [95% CI]", "Wilcoxon p", "test over", "CI favours"]


def paired_to_markdown(rows: Sequence[PairedRow], labels: Mapping[str, str] | None = None) -> str:
    """Pipe table of paired comparisons: Δ = method − reference, its bootstrap CI and Wilcoxon p."""
    lab = {**LABELS, **(labels or {})}
    lines = ["| " + " | ".join(PAIRED_HEADER) + " |", "|" + "|".join(["---", "---"] + ["---:"] * 5 + ["---"]) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in _paired_cells(r, lab)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def paired_to_csv(rows: Sequence[PairedRow]) -> str:
    """Paired comparisons at full precision, one line per (method, metric)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["method", "reference", "metric", "n_images", "n_resampled", "resampled_unit", "diff_mean", "diff_ci_lo",
                "diff_ci_hi", "wilcoxon_statistic", "wilcoxon_p", "test_n", "test_unit"])
    for r in rows:
        d = r.result.diff
        w.writerow([r.method, r.reference, r.metric, d.n_images, d.n_clusters, d.unit, repr(d.mean), repr(d.lo), repr(d.hi),
                    repr(r.result.statistic), repr(r.result.p_value), r.result.n_test, r.result.test_unit])
    return buf.getvalue()


def paired_to_latex(rows: Sequence[PairedRow], labels: Mapping[str, str] | None = None, notes: Sequence[str] = ()) -> str:
    """The paired table as a booktabs ``tabular``."""
    lab = {**LABELS, **(labels or {})}
    header = [latex_escape(h) for h in PAIRED_HEADER]
    body = [[latex_escape(c) for c in _paired_cells(r, lab)] for r in rows]
    return _latex_tabular(header, body, "ll" + "r" * 5 + "l", notes)


def write_paired_table(rows: Sequence[PairedRow], md_path: str | Path, csv_path: str | Path, latex_path: str | Path,
                       *, notes: Sequence[str] = (), labels: Mapping[str, str] | None = None) -> str:
    """Write the paired comparisons as Markdown (with ``notes``), CSV and LaTeX, atomically; returns the Markdown."""
    md = paired_to_markdown(rows, labels)
    if notes:
        md += "\n" + "".join(f"- {n}\n" for n in notes)
    atomic_write_text(md_path, md)
    atomic_write_text(csv_path, paired_to_csv(rows))
    atomic_write_text(latex_path, paired_to_latex(rows, labels, notes))
    return md


def write_per_image_csv(path: str | Path, records: Sequence[Mapping[str, object]]) -> None:
    """Write one line per (method, image): columns ``method, image, <metrics>`` (stable order), atomically."""
    keys: list[str] = []
    for rec in records:
        keys.extend(k for k in rec if k not in keys and k not in ("method", "image"))
    cols = ["method", "image"] + [k for k in METRIC_ORDER if k in keys] + [k for k in keys if k not in METRIC_ORDER]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n", restval="")
    w.writeheader()
    for rec in records:
        w.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in rec.items()})
    atomic_write_text(path, buf.getvalue())


LONG_COLUMNS = ["group", "factor", "method", "metric", "n", "mean", "std", "ci_lo", "ci_hi"]


def to_long_csv(groups: Mapping[str, Sequence[TableRow]], factors: Mapping[str, float] | None = None) -> str:
    """All groups' tables in long format: one line per (group, method, metric) with columns
    :data:`LONG_COLUMNS` (``factor``: the group's numeric factor, empty if it has none; CI
    columns empty without an interval), full precision, for plotting and joining across runs."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(LONG_COLUMNS)
    for group, rows in groups.items():
        f = (factors or {}).get(group)
        for row in rows:
            for k in metric_columns([row]):
                s = row.metrics[k]
                w.writerow([group, "" if f is None else repr(float(f)), row.method, k, s.n, repr(s.mean), repr(s.std),
                            repr(s.lo) if s.has_ci else "", repr(s.hi) if s.has_ci else ""])
    return buf.getvalue()


def write_long_csv(path: str | Path, groups: Mapping[str, Sequence[TableRow]], factors: Mapping[str, float] | None = None) -> None:
    """Write :func:`to_long_csv` atomically."""
    atomic_write_text(path, to_long_csv(groups, factors))


def write_simple_table(header: Sequence[str], body: Sequence[Sequence[object]], md_path: str | Path, csv_path: str | Path,
                       *, notes: Sequence[str] = (), formats: Mapping[str, str] | None = None) -> str:
    """A plain table (e.g. the calibration summary) as Markdown (numbers formatted with
    ``formats[column]``, default :data:`DEFAULT_FORMAT`; then ``notes``) and CSV (full precision),
    atomically; returns the Markdown."""
    fmts = formats or {}

    def cell(h: str, v: object) -> str:
        if isinstance(v, float):
            return format(v, fmts.get(h, DEFAULT_FORMAT))
        return str(v).replace("|", "/")

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(cell(h, v) for h, v in zip(header, r)) + " |" for r in body]
    md = "\n".join(lines) + "\n"
    if notes:
        md += "\n" + "".join(f"- {n}\n" for n in notes)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in body:
        w.writerow([repr(v) if isinstance(v, float) else v for v in r])
    atomic_write_text(md_path, md)
    atomic_write_text(csv_path, buf.getvalue())
    return md
