"""An unconditional chest-film generator judged per source: each generated film is assigned to the source
(adult NIH / pediatric Kermany) the shipped classifier `cls_cxr` reads it as, and each source's assigned
films are scored against that source's held-out test films only (issue 24).

Scoring the whole generated set against one source's films counts the other source's samples against it
(a mixed set is far from either pure set); assigning first compares like with like, as a class-conditional
model's per-class scores would. The assignment is the classifier's: it reads real test films' source right
on 197 of 198 at 64 px (docs/cxr.md), so the split is the model's own source mix, not chosen by us.

    meddiff sample --checkpoint xray_vdm64 -o runs/vdm_gen280 --num 280 --steps 128 --seed 1   # ~21 CPU-min
    python benchmarks/cxr_vdm_by_source.py --generated runs/vdm_gen280 --out runs/vdm_by_source \\
        --train runs/prep_cxr64 --test adult=runs/cxr_test_adult --test pediatric=runs/cxr_test_pediatric

Per source it prints FID, KID, precision and recall (meddiff.metrics.generation, as `meddiff evaluate
--generated`, real films area-averaged to the generated size) for the assigned films and, for comparison,
for the whole mixed set; and the memorisation check: the assigned films' nearest-training RMS distance
against the 5th percentile of that source's test films' own nearest-training distances. Writes
OUT/assigned_<source>/ (symbolic links to the generated films), OUT/eval_<source>[_all]/ and OUT/by_source.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cxr_memorisation import at_size, nearest  # noqa: E402

from meddiff.downstream.cxr import ADULT, PEDIATRIC, SOURCE_CLASSES, ChestFilmClassifier, classifier_input  # noqa: E402
from meddiff.io import find_images  # noqa: E402
from meddiff.io.atomic import atomic_write_text  # noqa: E402
from meddiff.metrics.generation import evaluate_generation, read_image_set  # noqa: E402

SOURCES = {"adult": ADULT, "pediatric": PEDIATRIC}


def assign_sources(films: np.ndarray) -> np.ndarray:
    """Source name (a key of SOURCES) of each film [N, H, W] on [-1, 1]: the source of cls_cxr's argmax class."""
    clf = ChestFilmClassifier.load()
    with torch.no_grad():
        pred = clf(classifier_input(films)).argmax(1).numpy()
    of_class = {k: name for name, src in SOURCES.items() for k in SOURCE_CLASSES[src]}
    return np.array([of_class[int(k)] for k in pred])


def link(files: list[Path], dest: Path) -> None:
    """Symbolic links to `files` in `dest`; a `dest` left by another draw (other names in it) is refused, not mixed in."""
    if dest.is_dir() and {p.name for p in dest.iterdir()} - {f.name for f in files}:
        raise SystemExit(f"{dest}: holds films of another draw; use a new --out")
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        target = dest / f.name
        if not target.exists():
            os.symlink(f.resolve(), target)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generated", type=Path, required=True, help="a folder of generated films (meddiff sample -o)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--train", type=Path, required=True, help="a `meddiff prepare` folder of the training films (its train split)")
    ap.add_argument("--test", action="append", required=True, metavar="SOURCE=DIR",
                    help="held-out films of one source (adult or pediatric); repeat per source")
    a = ap.parse_args(argv)
    tests = {}
    for spec in a.test:
        source, _, folder = spec.partition("=")
        if source not in SOURCES or not folder:
            ap.error(f"--test {spec!r}: expected adult=DIR or pediatric=DIR")
        tests[source] = Path(folder)
    # read_image_set reads the files of find_images in order, skipping grid*: the same order here
    files = [Path(item.path) for item in find_images(a.generated) if not Path(item.path).name.startswith("grid")]
    films = np.stack(read_image_set(a.generated))
    if len(films) != len(files):
        raise SystemExit(f"{a.generated}: expected one 2D film per file, got {len(films)} images from {len(files)} files")
    size = films.shape[-1]
    source_of = assign_sources(films)
    train = at_size(read_image_set(a.train, "train"), size)
    d_gen = nearest(films, train)
    lines = [f"{len(films)} generated films at {size}x{size} ({a.generated}); each assigned to the source cls_cxr reads it as: "
             + ", ".join(f"{s} {int((source_of == s).sum())}" for s in SOURCES) + "\n",
             "| source | generated set | n gen | n real | FID | KID | precision | recall | nearest-training distance: median "
             "(test films' median) | generated below the test films' 5th pct |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    for source, test in tests.items():
        mine = source_of == source
        link([f for f, m in zip(files, mine) if m], a.out / f"assigned_{source}")
        d_test = nearest(at_size(read_image_set(test), size), train)
        p5 = np.percentile(d_test, 5)
        for label, folder, sel in (("assigned", a.out / f"assigned_{source}", mine),
                                   ("all (mixed)", a.generated, np.ones_like(mine))):
            out = a.out / (f"eval_{source}" if label == "assigned" else f"eval_{source}_all")
            s = evaluate_generation(folder, test, out)
            v = s.values
            lines.append(f"| {source} | {label} | {s.n_generated} | {s.n_real} | {v['fid']:.1f} | {v['kid']:.4f} +- "
                         f"{v['kid_std']:.4f} | {v['precision']:.3f} | {v['recall']:.3f} | {np.median(d_gen[sel]):.3f} "
                         f"({np.median(d_test):.3f}) | {int((d_gen[sel] < p5).sum())} of {int(sel.sum())} (5th pct {p5:.3f}) |")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    atomic_write_text(a.out / "by_source.md", text)
    print("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
