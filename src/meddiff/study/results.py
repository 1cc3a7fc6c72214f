"""Results of a 2AFC study: accuracy with exact intervals, tests against chance, agreement.

Accuracy = fraction of pairs in which the reader picked the real image; 50% means the
generated images could not be told from real ones. For each method, each reader and each
reader x method: the exact (Clopper-Pearson) 95% interval and the two-sided exact binomial
test of accuracy = 50%. Agreement between readers on "picked the real image" (equivalently on
the side chosen, since each pair's real side is fixed): Fleiss' kappa over the pairs answered
by every reader, and Cohen's kappa for every two readers over the pairs both answered.
"""

from __future__ import annotations

import csv
import html
import io
import itertools
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from meddiff.io.atomic import atomic_write_text
from meddiff.study import db


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact binomial interval (Clopper & Pearson, Biometrika 26(4) 1934):
    lower = Beta quantile alpha/2 with (k, n - k + 1), upper = Beta quantile 1 - alpha/2 with
    (k + 1, n - k), alpha = 1 - confidence; lower = 0 when k = 0 and upper = 1 when k = n."""
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"clopper_pearson: need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    alpha = 1.0 - confidence
    lo = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lo, hi


def binomial_p(k: int, n: int, p: float = 0.5) -> float:
    """Two-sided exact binomial test of success probability `p` (scipy.stats.binomtest)."""
    return float(stats.binomtest(k, n, p, alternative="two-sided").pvalue)


def cohen_kappa(a: list[int] | np.ndarray, b: list[int] | np.ndarray) -> float:
    """Cohen's kappa (Educ. Psychol. Meas. 20(1) 1960): (p_o - p_e) / (1 - p_e), p_o = observed
    agreement, p_e = sum over categories of the product of the two raters' marginal rates.
    NaN when p_e = 1 (both raters always gave the same single category)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"cohen_kappa: need two equal-length non-empty ratings, got {a.shape} and {b.shape}")
    cats = np.union1d(a, b)
    p_o = float(np.mean(a == b))
    p_e = float(sum(np.mean(a == c) * np.mean(b == c) for c in cats))
    return math.nan if p_e >= 1.0 else (p_o - p_e) / (1.0 - p_e)


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa (Psychol. Bull. 76(5) 1971). counts[i, j] = raters putting item i in
    category j, the same number n >= 2 of raters per item. P_i = (sum_j n_ij^2 - n) / (n (n - 1)),
    p_j = sum_i n_ij / (N n), kappa = (mean P_i - sum_j p_j^2) / (1 - sum_j p_j^2); NaN if the
    denominator is 0 (every rating in one category)."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[0] < 1:
        raise ValueError(f"fleiss_kappa: counts must be [items, categories], got shape {counts.shape}")
    n = counts.sum(axis=1)
    if not np.all(n == n[0]) or n[0] < 2:
        raise ValueError(f"fleiss_kappa: every item needs the same number (>= 2) of ratings, got {sorted(set(n.tolist()))}")
    n = float(n[0])
    p_i = (np.sum(counts ** 2, axis=1) - n) / (n * (n - 1))
    p_j = counts.sum(axis=0) / counts.sum()
    p_e = float(np.sum(p_j ** 2))
    return math.nan if p_e >= 1.0 else (float(p_i.mean()) - p_e) / (1.0 - p_e)


@dataclass(frozen=True)
class Accuracy:
    by: str          # "method", "reader", "reader x method" or "all"
    group: str
    n: int
    correct: int
    accuracy: float
    ci_low: float
    ci_high: float
    p_value: float   # two-sided exact binomial test of accuracy = 0.5
    mean_confidence: float
    median_rt_ms: float


def load_answers(study: str | Path) -> list[dict]:
    """Every answer joined with its pair and reader, in (reader, answer time) order."""
    conn = db.open_study_db(study)
    try:
        rows = conn.execute(
            "SELECT r.label AS reader, a.pair_id, p.method, p.real_source, p.generated_source, p.real_side, a.choice, "
            "a.correct, a.confidence, a.rt_ms, a.answered_at FROM answers a JOIN readers r ON r.reader_id = a.reader_id "
            "JOIN pairs p ON p.pair_id = a.pair_id ORDER BY a.reader_id, a.answer_id").fetchall()
        return [dict(r) for r in rows]
    finally:
        conn.close()


def accuracy(rows: list[dict], by: str, group: str) -> Accuracy:
    n = len(rows)
    k = sum(int(r["correct"]) for r in rows)
    lo, hi = clopper_pearson(k, n)
    conf = [r["confidence"] for r in rows if r["confidence"] is not None]
    rts = [r["rt_ms"] for r in rows if r["rt_ms"] is not None]
    return Accuracy(by, group, n, k, k / n, lo, hi, binomial_p(k, n), float(np.mean(conf)) if conf else math.nan,
                    float(np.median(rts)) if rts else math.nan)


def accuracy_tables(rows: list[dict]) -> list[Accuracy]:
    """Accuracy for all answers, per method, per reader and per reader x method (groups with answers only)."""
    out: list[Accuracy] = []
    if not rows:
        return out
    out.append(accuracy(rows, "all", "all"))
    for key, name in (("method", "method"), ("reader", "reader")):
        for g in sorted({r[key] for r in rows}, key=_natural):
            out.append(accuracy([r for r in rows if r[key] == g], name, g))
    for rd, m in sorted({(r["reader"], r["method"]) for r in rows}, key=lambda t: (_natural(t[0]), t[1])):
        out.append(accuracy([r for r in rows if r["reader"] == rd and r["method"] == m], "reader x method", f"{rd} / {m}"))
    return out


def _natural(s: str) -> tuple:
    """Sort 'reader2' before 'reader10'."""
    head = s.rstrip("0123456789")
    tail = s[len(head):]
    return (head, int(tail) if tail else -1, s)


@dataclass(frozen=True)
class Agreement:
    what: str       # "Fleiss" or "Cohen"
    scope: str      # "all" or a method name
    readers: str
    items: int
    kappa: float


def agreement(rows: list[dict]) -> list[Agreement]:
    """Fleiss' kappa (all pairs, and per method) over pairs answered by every reader who answered
    anything, and Cohen's kappa for each two readers over the pairs both answered."""
    readers = sorted({r["reader"] for r in rows}, key=_natural)
    out: list[Agreement] = []
    if len(readers) < 2:
        return out
    correct = {(r["reader"], r["pair_id"]): int(r["correct"]) for r in rows}
    method = {r["pair_id"]: r["method"] for r in rows}
    for scope in ["all", *sorted(set(method.values()))]:
        items = sorted(p for p in method if (scope == "all" or method[p] == scope) and all((rd, p) in correct for rd in readers))
        if items:
            counts = np.array([[sum(correct[(rd, p)] for rd in readers), sum(1 - correct[(rd, p)] for rd in readers)] for p in items])
            out.append(Agreement("Fleiss", scope, ",".join(readers), len(items), fleiss_kappa(counts)))
    for a, b in itertools.combinations(readers, 2):
        items = sorted(p for p in method if (a, p) in correct and (b, p) in correct)
        if items:
            out.append(Agreement("Cohen", "all", f"{a},{b}", len(items),
                                 cohen_kappa([correct[(a, p)] for p in items], [correct[(b, p)] for p in items])))
    return out


def _csv(rows: list[dict], fields: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items() if k in fields})
    return buf.getvalue()


def _f(x: float, fmt: str = "{:.3f}") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)


def text_table(acc: list[Accuracy], agr: list[Agreement]) -> str:
    """Plain-text summary printed by `meddiff study results`."""
    lines = [f"{'group':<28} {'n':>5} {'correct':>7} {'accuracy':>8}  {'95% CI (exact)':<17} {'p (vs 50%)':>10}"]
    for a in acc:
        name = a.group if a.by == "all" else f"{a.by}: {a.group}"
        lines.append(f"{name:<28} {a.n:>5} {a.correct:>7} {a.accuracy:>8.3f}  [{a.ci_low:.3f}, {a.ci_high:.3f}]   {a.p_value:>10.4g}")
    for g in agr:
        lines.append(f"{g.what} kappa ({g.scope}; {g.readers}; {g.items} pairs): {_f(g.kappa)}")
    return "\n".join(lines)


def html_report(study: Path, acc: list[Accuracy], agr: list[Agreement], n_answers: int, manifest: dict) -> str:
    e = html.escape

    def table(items: list[Accuracy], by: str) -> str:
        rows = "".join(
            f"<tr><td>{e(a.group)}</td><td>{a.n}</td><td>{a.correct}</td><td>{a.accuracy:.3f}</td>"
            f"<td>[{a.ci_low:.3f}, {a.ci_high:.3f}]</td><td>{a.p_value:.4g}</td><td>{_f(a.mean_confidence, '{:.2f}')}</td>"
            f"<td>{_f(a.median_rt_ms, '{:.0f}')}</td></tr>" for a in items if a.by == by)
        return ("<table><tr><th>" + e(by) + "</th><th>n</th><th>correct</th><th>accuracy</th><th>95% CI (Clopper-Pearson)</th>"
                "<th>p (binomial, vs 50%)</th><th>mean confidence</th><th>median time (ms)</th></tr>" + rows + "</table>")

    agr_rows = "".join(f"<tr><td>{e(g.what)}</td><td>{e(g.scope)}</td><td>{e(g.readers)}</td><td>{g.items}</td><td>{_f(g.kappa)}</td></tr>" for g in agr)
    opts = manifest.get("options", {})
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>2AFC reader study: results</title>
<style>body{{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;}} table{{border-collapse:collapse;margin:1em 0;}}
td,th{{border:1px solid #bbb;padding:.2em .6em;text-align:right;}} td:first-child,th:first-child{{text-align:left;}}</style></head><body>
<h1>2AFC reader study: results</h1>
<p>Study <code>{e(str(study))}</code>: {len(manifest.get('pairs', []))} pairs, methods {e(', '.join(manifest.get('methods', {})))},
seed {e(str(opts.get('seed')))}, pairing {e(str(opts.get('pairing')))}; {n_answers} answers.</p>
<p>Accuracy is the fraction of pairs in which the reader picked the real image. 50% means the generated images
could not be told apart from real ones; an interval that excludes 0.5 (p &lt; 0.05) means readers could tell them apart
(or, below 0.5, preferred the generated image). Intervals are exact (Clopper-Pearson); p is the two-sided exact
binomial test of 50%.</p>
<h2>Per method</h2>{table(acc, 'method')}
<h2>Per reader</h2>{table(acc, 'reader')}
<h2>Per reader and method</h2>{table(acc, 'reader x method')}
<h2>All answers</h2>{table(acc, 'all')}
<h2>Inter-reader agreement</h2>
<p>On "picked the real image". Fleiss' kappa over the pairs answered by every reader; Cohen's kappa for each two readers.</p>
<table><tr><th>kappa</th><th>scope</th><th>readers</th><th>pairs</th><th>kappa</th></tr>{agr_rows}</table>
</body></html>
"""


ANSWER_FIELDS = ["reader", "pair_id", "method", "real_source", "generated_source", "real_side", "choice", "correct",
                 "confidence", "rt_ms", "answered_at"]


def write_results(study: str | Path, out: str | Path | None = None) -> dict:
    """Compute everything and write answers.csv, accuracy.csv, agreement.csv, results.json and
    report.html to `out` (default ``<study>/results``). Returns {"accuracy", "agreement", "text", "out"}."""
    study = Path(study)
    out = Path(out) if out is not None else study / "results"
    rows = load_answers(study)
    acc = accuracy_tables(rows)
    agr = agreement(rows)
    manifest_path = study / db.STUDY_JSON
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "answers.csv", _csv(rows, ANSWER_FIELDS))
    atomic_write_text(out / "accuracy.csv", _csv([asdict(a) for a in acc], list(Accuracy.__dataclass_fields__)))
    atomic_write_text(out / "agreement.csv", _csv([asdict(g) for g in agr], list(Agreement.__dataclass_fields__)))
    atomic_write_text(out / "results.json", json.dumps({"answers": len(rows), "accuracy": [asdict(a) for a in acc],
                                                         "agreement": [asdict(g) for g in agr]}, indent=1, allow_nan=True) + "\n")
    atomic_write_text(out / "report.html", html_report(study, acc, agr, len(rows), manifest))
    text = text_table(acc, agr) if rows else "no answers yet"
    return {"accuracy": acc, "agreement": agr, "text": text, "out": out, "answers": rows}
