"""Result tables: one row per method, one column per metric (mean ± std over images, n).

Rows are :class:`TableRow` values; they are written as Markdown (for people, the README and
the HTML report) and CSV (full precision, for programs), both atomically. Column order is
stable: the known metrics in :data:`METRIC_ORDER`, then any others in first-seen order.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from ..errors import InputError
from ..io.atomic import atomic_write_text
from .image import METRIC_NAMES, aggregate

METRIC_ORDER = METRIC_NAMES  # psnr, ssim, accutance, gradient_ratio

LABELS = {
    "psnr": "PSNR (dB) ↑",
    "ssim": "SSIM ↑",
    "accutance": "accutance (sharpness)",
    "gradient_ratio": "gradient ratio (1 = truth)",
}
FORMATS = {"psnr": ".2f", "ssim": ".4f", "accutance": ".2f", "gradient_ratio": ".3f"}
DEFAULT_FORMAT = ".4g"


@dataclass(frozen=True)
class MetricStats:
    """Summary of one metric over the images of one method."""

    mean: float
    std: float  # sample standard deviation (ddof=1), 0 for a single image
    n: int


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


def metric_columns(rows: Iterable[TableRow]) -> list[str]:
    """Metric names present in ``rows``: those of METRIC_ORDER first, then others in first-seen order."""
    seen: list[str] = []
    for row in rows:
        seen.extend(k for k in row.metrics if k not in seen)
    return [k for k in METRIC_ORDER if k in seen] + [k for k in seen if k not in METRIC_ORDER]


def _cell(name: str, s: MetricStats | None) -> str:
    if s is None:
        return ""
    fmt = FORMATS.get(name, DEFAULT_FORMAT)
    if math.isnan(s.std) or s.n < 2:
        return format(s.mean, fmt)
    return f"{format(s.mean, fmt)} ± {format(s.std, fmt)}"


def to_markdown(rows: Sequence[TableRow]) -> str:
    """A GitHub pipe table: ``| method | n | <metric> ... |``, cells "mean ± std"."""
    cols = metric_columns(rows)
    header = ["method", "n"] + [LABELS.get(c, c) for c in cols]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for row in rows:
        cells = [row.method.replace("|", "/"), str(row.n)] + [_cell(c, row.metrics.get(c)) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


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
    """CSV with columns ``method, n, <metric>_mean, <metric>_std, ...`` at full precision."""
    cols = metric_columns(rows)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["method", "n"] + [f"{c}_{p}" for c in cols for p in ("mean", "std")])
    for row in rows:
        vals: list[str] = []
        for c in cols:
            s = row.metrics.get(c)
            vals += ["", ""] if s is None else [repr(s.mean), repr(s.std)]
        w.writerow([row.method, row.n] + vals)
    return buf.getvalue()


def read_csv(path: str | Path) -> list[TableRow]:
    """Rows back from a CSV written by :func:`to_csv` / :func:`write_table`."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        if fields[:2] != ["method", "n"]:
            raise InputError(f"{path}: expected columns 'method, n, <metric>_mean, <metric>_std, ...', got {fields}")
        names = [f[: -len("_mean")] for f in fields[2::2]]
        rows = []
        for rec in reader:
            n = int(rec["n"])
            metrics = {k: MetricStats(float(rec[f"{k}_mean"]), float(rec[f"{k}_std"]), n) for k in names if rec[f"{k}_mean"] != ""}
            rows.append(TableRow(rec["method"], metrics))
    return rows


def write_table(rows: Sequence[TableRow], md_path: str | Path, csv_path: str | Path, *, notes: Sequence[str] = ()) -> str:
    """Write ``rows`` as Markdown (table, then ``notes`` as bullet lines) and CSV, atomically.

    Returns the Markdown text that was written.
    """
    md = to_markdown(rows)
    if notes:
        md += "\n" + "".join(f"- {n}\n" for n in notes)
    atomic_write_text(md_path, md)
    atomic_write_text(csv_path, to_csv(rows))
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
