"""Class-conditional chest-film VDM, judged per source against held-out patients' films (issue 24).

For each source (adult NIH, pediatric Kermany) it draws --num films with the classes in the proportions of
that source's test films (one `meddiff sample --label CLASS` per class, its own seed), then scores them
against that source's test films at the generated size: FID, KID, precision and recall
(meddiff.metrics.generation, as `meddiff evaluate --generated`), and class fidelity: the share of films
the shipped classifier (`cls_cxr`, meddiff.downstream.cxr) assigns to the class they were drawn for,
five-way and within the source.

    python scripts/cxr_vdm_data.py films ../shared/data/cxr_train runs/cxr_test_adult --split test --source adult
    python scripts/cxr_vdm_data.py films ../shared/data/cxr_train runs/cxr_test_pediatric --split test --source pediatric
    python benchmarks/cxr_vdm_classes.py --checkpoint runs/vdm_cxr64_cls --out runs/vdm_cls_eval \\
        --test adult=runs/cxr_test_adult --test pediatric=runs/cxr_test_pediatric

Prints a markdown table; writes OUT/gen_<source>/<class>/ (the films) and OUT/eval_<source>/ (the
evaluate outputs). Sampling is the cost: about 4.5 CPU-seconds per film at 64 px and 128 steps here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from meddiff.cli import main as cli
from meddiff.downstream.cxr import ADULT, CXR_CLASSES, PEDIATRIC, SOURCE_CLASSES, read_films
from meddiff.metrics.generation import evaluate_generation, read_image_set

SOURCES = {"adult": ADULT, "pediatric": PEDIATRIC}


def slug(k: int) -> str:
    return CXR_CLASSES[k].replace(" ", "_")


def class_counts(metadata_root: Path, source: str, n: int) -> dict[int, int]:
    """n split over the source's classes in the proportions of its test films (largest remainders)."""
    labels = [f.label for f in read_films(metadata_root, "test") if f.source == SOURCES[source]]
    classes = SOURCE_CLASSES[SOURCES[source]]
    share = np.array([labels.count(k) for k in classes], float) / len(labels) * n
    counts = np.floor(share).astype(int)
    for i in np.argsort(counts - share)[: n - counts.sum()]:
        counts[i] += 1
    return {k: int(c) for k, c in zip(classes, counts) if c > 0}


def class_fidelity(films: dict[int, list[np.ndarray]], source: str) -> tuple[float, float, float]:
    """(five-way accuracy, within-source accuracy, share whose 5-way class is of the drawn source) of the
    classifier on films drawn for known classes."""
    import torch

    from meddiff.downstream.cxr import ChestFilmClassifier, classifier_input, source_probabilities

    clf = ChestFilmClassifier.load()
    hits5 = hits_s = right_source = total = 0
    classes = list(SOURCE_CLASSES[SOURCES[source]])
    for k, imgs in films.items():
        with torch.no_grad():
            logits = clf(classifier_input(np.stack(imgs)))
        hits5 += int((logits.argmax(1) == k).sum())
        right_source += sum(int(c) in classes for c in logits.argmax(1))
        hits_s += int((source_probabilities(logits, SOURCES[source]).argmax(1) == classes.index(k)).sum())
        total += len(imgs)
    return hits5 / total, hits_s / total, right_source / total


def run_source(a: argparse.Namespace, source: str, test: Path) -> dict:
    counts = class_counts(a.metadata, source, a.num)
    tag = source if a.guidance == 0 else f"{source}_w{a.guidance:g}"  # one draw's folders: gen_TAG, eval_TAG
    gen_root = a.out / f"gen_{tag}"
    films = {}
    for k, n in counts.items():
        dest = gen_root / slug(k)
        if not dest.is_dir():
            rc = cli(["sample", "--checkpoint", str(a.checkpoint), "-o", str(dest), "--num", str(n), "--label", slug(k),
                      "--steps", str(a.steps), "--seed", str(a.seed + k), "--no-progress"]
                     + (["--guidance", f"{a.guidance:g}"] if a.guidance else []))
            if rc:
                raise SystemExit(rc)
        films[k] = read_image_set(dest)
    scores = evaluate_generation(gen_root, test, a.out / f"eval_{tag}")
    acc5, acc_s, right = class_fidelity(films, source)
    v = scores.values
    return {"source": source, "n_gen": scores.n_generated, "n_real": scores.n_real, "counts": counts, "fid": v["fid"],
            "kid": v["kid"], "kid_std": v["kid_std"], "precision": v.get("precision"), "recall": v.get("recall"),
            "acc5": acc5, "acc_source": acc_s, "right_source": right}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--test", action="append", required=True, metavar="SOURCE=DIR",
                    help="held-out films of one source (adult or pediatric); repeat per source")
    ap.add_argument("--metadata", type=Path, default=Path("../shared/data/cxr_train"),
                    help="folder with metadata.csv (the test films' class proportions)")
    ap.add_argument("--num", type=int, default=100)
    ap.add_argument("--steps", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--guidance", type=float, default=0.0, metavar="W",
                    help="classifier-free guidance weight of `meddiff sample --guidance` (0: none); films go to "
                         "OUT/gen_<source>_wW")
    a = ap.parse_args(argv)
    rows = []
    for spec in a.test:
        source, _, folder = spec.partition("=")
        if source not in SOURCES or not folder:
            ap.error(f"--test {spec!r}: expected adult=DIR or pediatric=DIR")
        rows.append(run_source(a, source, Path(folder)))
    print(f"\n{a.checkpoint}, {a.steps} sampling steps, guidance {a.guidance:g}; classes drawn in the test films' "
          "proportions\n")
    print("| source | generated (per class) | real | FID | KID | precision | recall | class fidelity, 5-way | within source "
          "| read as the drawn source |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        per = ", ".join(f"{slug(k)} {n}" for k, n in r["counts"].items())
        print(f"| {r['source']} | {r['n_gen']} ({per}) | {r['n_real']} | {r['fid']:.1f} | {r['kid']:.4f} +- {r['kid_std']:.4f} | "
              f"{r['precision']:.2f} | {r['recall']:.2f} | {r['acc5']:.2f} | {r['acc_source']:.2f} | {r['right_source']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
