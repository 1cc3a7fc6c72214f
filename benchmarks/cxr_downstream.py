"""Med-cDiff's downstream task on chest films: does a denoised film serve a classifier as well as the clean one?

The finding classifier (meddiff.downstream.cxr, trained on clean TRAIN-split films only) reads the
TEST-split films of a chest-film folder (``../shared/data/cxr_train``), per source and never pooled:
adult NIH films normal / pneumonia, pediatric Kermany films normal / bacterial / viral. Each film is
read as benchmarks/cxr_denoise.py reads it (256 x 256, its own 0.5 / 99.5 percentiles to [-1, 1]),
degraded at cxr_denoise.py's levels with its seeds (Gaussian 0.1 + 1% salt-and-pepper; low dose 25%,
10%, 5%), restored at 256 x 256 by

- ``xray_denoise`` (or --checkpoint) with its stored default sampler, through cxr_denoise.py's restore path;
- the best classical baseline of cxr_denoise.py at that level and source (highest PSNR in docs/cxr.md;
  BM3D only where it was best and the ``bm3d`` package is installed, else the next best),

and area-averaged to the classifier's 128 x 128. Scores: accuracy (argmax over the source's classes)
and AUROC (two classes: normal vs pneumonia; three: one-vs-rest mean), with 95% percentile bootstrap CIs
resampling patients (meddiff.metrics.stats; NIH patients may have several films), and the paired
difference in accuracy to the clean films with its CI. The issue's target: |denoised - clean| <= 2 points.

    python benchmarks/cxr_downstream.py                      # 40 adult + 39 pediatric films, class-stratified (~330 CPU-s)
    python benchmarks/cxr_downstream.py --per-source 0       # every test film: 116 adult, 82 pediatric (~840 CPU-s)

Class fidelity of an unconditional generator (--generated DIR, e.g. `meddiff sample --checkpoint
xray_vdm64 --num 100 --steps 128 -o DIR`): the five-way predicted classes of the generated films
against those of each source's test films brought to the generated size first (so both sets pass
through the same resolution), and the classifier's accuracy on those reduced test films (how much the
reduced size alone costs it).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cxr_denoise import LEVELS, bm3d_or_none, degrade, model_restorer, read_film  # noqa: E402

from meddiff.baselines.classical import median_filter, nl_means  # noqa: E402
from meddiff.downstream.cxr import (CXR_CLASSES, SOURCE_CLASSES, ChestFilmClassifier, classifier_input,  # noqa: E402
                                    read_films, source_probabilities, within_source_labels)
from meddiff.downstream.metrics import macro_auroc  # noqa: E402
from meddiff.metrics.stats import bootstrap_ci, paired_comparison, percentile_interval, resample_indices  # noqa: E402

CLASSICAL = {"median 3x3": median_filter, "NLM": nl_means, "median + NLM": lambda y: nl_means(median_filter(y))}
# classical methods in decreasing PSNR per source and level (docs/cxr.md, cxr_denoise.py, 20 test films per source)
BEST_CLASSICAL = {
    "adult (NIH)": {"gauss0.1+sp1%": ("median + NLM",), "dose25%": ("NLM", "BM3D"), "dose10%": ("NLM",),
                    "dose5%": ("median + NLM",)},
    "pediatric (Kermany)": {"gauss0.1+sp1%": ("median + NLM",), "dose25%": ("BM3D", "NLM"),
                            "dose10%": ("BM3D", "median + NLM"), "dose5%": ("median + NLM",)},
}


def classical(source: str, level: str):
    """(name, function) of the best classical method available for this source and level."""
    methods = dict(CLASSICAL)
    if (b := bm3d_or_none()) is not None:
        methods["BM3D"] = b
    name = next(n for n in BEST_CLASSICAL[source][level] if n in methods)
    return name, methods[name]


def stratified(films: list, n: int, seed: int = 0) -> list:
    """n films (all if n <= 0 or n >= len) keeping the class proportions, seeded; sorted by file name."""
    if n <= 0 or n >= len(films):
        return films
    rng = np.random.default_rng(seed)
    labels = np.array([f.label for f in films])
    keep: list[int] = []
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.maximum(1, np.round(counts / counts.sum() * n)).astype(int)
    for c, q in zip(classes, quota):
        idx = np.flatnonzero(labels == c)
        keep += rng.permutation(idx)[:q].tolist()
    return [films[i] for i in sorted(keep)]


def auroc_ci(p: np.ndarray, y: np.ndarray, patients: list[str]) -> tuple[float, float, float, int]:
    """AUROC and its patient-bootstrap 95% interval; replicates that miss a class are dropped (their count returned)."""
    _, codes = np.unique(np.asarray(patients), return_inverse=True)
    members = [np.flatnonzero(codes == c) for c in range(codes.max() + 1)]
    reps, dropped = [], 0
    for draw in resample_indices(len(members)):
        idx = np.concatenate([members[c] for c in draw])
        if len(np.unique(y[idx])) < p.shape[1]:
            dropped += 1
            continue
        reps.append(macro_auroc(p[idx], y[idx]))
    lo, hi = percentile_interval(np.asarray(reps))
    return macro_auroc(p, y), lo, hi, dropped


def score(clf, films_256: np.ndarray, source: str, y: np.ndarray, patients: list[str]) -> dict:
    p = clf.probabilities(classifier_input(films_256), source).numpy()
    correct = (p.argmax(1) == y).astype(float)
    acc = bootstrap_ci(correct, patients)
    auc, lo, hi, dropped = auroc_ci(p, y, patients)
    return {"correct": correct, "acc": acc.mean, "acc_lo": acc.lo, "acc_hi": acc.hi,
            "auroc": auc, "auroc_lo": lo, "auroc_hi": hi, "dropped": dropped}


def downstream(a, clf) -> list[dict]:
    restorer = model_restorer(a.checkpoint)
    rows = []
    for source in SOURCE_CLASSES:
        films = stratified([f for f in read_films(a.data, "test") if f.source == source], a.per_source)
        y = within_source_labels([f.label for f in films], source)
        patients = [f.patient_id for f in films]
        clean = np.stack([read_film(f.path) for f in films])
        base = score(clf, clean, source, y, patients)
        rows.append({"source": source, "level": "-", "films": "clean", **base, "n": len(films)})
        print(f"{source}: {len(films)} test films of {len(set(patients))} patients, classes "
              f"{np.bincount(y).tolist()}; clean accuracy {base['acc']:.3f} AUROC {base['auroc']:.3f}", flush=True)
        for level in a.levels:
            cname, cfn = classical(source, level)
            t0 = time.perf_counter()
            noisy = np.stack([degrade(x0, level, seed=i) for i, x0 in enumerate(clean)])
            sets = {"noisy": noisy, a.name: np.stack([np.clip(restorer(v), -1, 1) for v in noisy]),
                    cname: np.stack([np.clip(cfn(v), -1, 1) for v in noisy])}
            for what, imgs in sets.items():
                s = score(clf, imgs.astype(np.float32), source, y, patients)
                d = paired_comparison(s["correct"], base["correct"], patients).diff
                rows.append({"source": source, "level": level, "films": what, **s, "n": len(films),
                             "diff": d.mean, "diff_lo": d.lo, "diff_hi": d.hi})
                print(f"  {level:14s} {what:14s} accuracy {s['acc']:.3f} [{s['acc_lo']:.3f}, {s['acc_hi']:.3f}]  "
                      f"vs clean {100 * d.mean:+.1f} pts  AUROC {s['auroc']:.3f}", flush=True)
            print(f"  {level}: {time.perf_counter() - t0:.0f} s", flush=True)
    return rows


def fidelity(a, clf) -> str:
    from meddiff.metrics.generation import read_image_set

    gen = np.stack(read_image_set(a.generated))
    size = gen.shape[-1]
    pred_gen = clf(classifier_input(gen)).argmax(1).numpy()
    lines = [f"\nClass fidelity: {len(gen)} generated films at {size}x{size} ({a.generated}); test films area-averaged "
             f"to {size}x{size} first, then both brought to 128 x 128 (bilinear)\n",
             "| set | n | " + " | ".join(CXR_CLASSES) + " | accuracy within source at this size |",
             "|---|---:|" + "---:|" * len(CXR_CLASSES) + "---:|"]
    lines.append(f"| generated | {len(gen)} | " + " | ".join(f"{np.mean(pred_gen == k):.2f}" for k in range(len(CXR_CLASSES)))
                 + " | (no labels) |")
    for source in SOURCE_CLASSES:
        films = [f for f in read_films(a.data, "test") if f.source == source]
        small = classifier_input(np.stack([read_film(f.path) for f in films]), size)
        logits = clf(classifier_input(small))
        pred = logits.argmax(1).numpy()
        y = within_source_labels([f.label for f in films], source)
        acc = float((source_probabilities(logits, source).argmax(1).numpy() == y).mean())
        true = np.bincount([f.label for f in films], minlength=len(CXR_CLASSES)) / len(films)
        lines.append(f"| test {source}, predicted | {len(films)} | " + " | ".join(f"{np.mean(pred == k):.2f}" for k in range(len(CXR_CLASSES)))
                     + f" | {acc:.3f} |")
        lines.append(f"| test {source}, true labels | {len(films)} | " + " | ".join(f"{t:.2f}" for t in true) + " | |")
    lines += ["\nWithin each source: the generated films the classifier assigns to it, and the shares of its classes "
              "among them, against the test films' true shares\n",
              "| source | generated assigned (share) | generated: class shares | test: true class shares |", "|---|---:|---|---|"]
    for source, idx in SOURCE_CLASSES.items():
        mine = np.isin(pred_gen, idx)
        films = [f for f in read_films(a.data, "test") if f.source == source]
        true = np.bincount([f.label for f in films], minlength=len(CXR_CLASSES))[list(idx)] / len(films)
        gen_sh = [np.mean(pred_gen[mine] == k) if mine.any() else float("nan") for k in idx]
        names = [CXR_CLASSES[k].split(" ", 1)[1] for k in idx]
        lines.append(f"| {source} | {int(mine.sum())} ({mine.mean():.2f}) | "
                     + ", ".join(f"{n} {v:.2f}" for n, v in zip(names, gen_sh)) + " | "
                     + ", ".join(f"{n} {v:.2f}" for n, v in zip(names, true)) + " |")
    return "\n".join(lines) + "\n"


def table(rows: list[dict]) -> str:
    out = []
    for source in SOURCE_CLASSES:
        rs = [r for r in rows if r["source"] == source]
        if not rs:
            continue
        out.append(f"\n### {source}, n = {rs[0]['n']} test films\n")
        out.append("| level | films | accuracy [95% CI] | vs clean (points) [95% CI] | AUROC [95% CI] |")
        out.append("|---|---|---:|---:|---:|")
        for r in rs:
            diff = "" if "diff" not in r else f"{100 * r['diff']:+.1f} [{100 * r['diff_lo']:+.1f}, {100 * r['diff_hi']:+.1f}]"
            out.append(f"| {r['level']} | {r['films']} | {r['acc']:.3f} [{r['acc_lo']:.3f}, {r['acc_hi']:.3f}] | {diff} | "
                       f"{r['auroc']:.3f} [{r['auroc_lo']:.3f}, {r['auroc_hi']:.3f}] |")
    return "\n".join(out) + "\n"


def default_data() -> Path:
    """../shared/data/cxr_train next to the clone (or next to its worktree folder)."""
    here = Path(__file__).resolve()
    found = [p / "shared/data/cxr_train" for p in here.parents[1:4] if (p / "shared/data/cxr_train").is_dir()]
    return found[0] if found else here.parents[2] / "shared/data/cxr_train"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=default_data(), help="chest-film folder (default: shared/data/cxr_train beside the clone)")
    ap.add_argument("--classifier", type=Path, default=None, help="a meddiff-cls-v1 chest-film file (default: the shipped cls_cxr)")
    ap.add_argument("--checkpoint", default="xray_denoise", help="denoiser: NAME=MODEL or MODEL")
    ap.add_argument("--per-source", type=int, default=40, help="test films per source, class-stratified (0: all: 116 adult, 82 pediatric)")
    ap.add_argument("--levels", nargs="+", default=list(LEVELS), choices=list(LEVELS))
    ap.add_argument("--generated", type=Path, default=None, help="generated films for the class-fidelity table")
    ap.add_argument("--no-denoise", action="store_true", help="only the class-fidelity table")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("runs/bench_cxr_downstream"))
    a = ap.parse_args(argv)
    name, _, path = a.checkpoint.rpartition("=")
    a.name, a.checkpoint = name or path, path
    torch.set_num_threads(a.threads)
    clf = ChestFilmClassifier.load(a.classifier)
    a.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    md = f"classifier {clf.path.name}, denoiser {a.checkpoint}\n"
    if not a.no_denoise:
        md += table(downstream(a, clf))
    if a.generated is not None:
        md += fidelity(a, clf)
    tmp = a.out / "results.md.tmp"
    tmp.write_text(md)
    tmp.replace(a.out / "results.md")
    print(md)
    print(f"wrote {a.out / 'results.md'} ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
