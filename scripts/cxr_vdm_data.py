"""Data of the class-conditional chest-film VDM (`configs/vdm_cxr64_cls.yaml`), from a folder of films
with a ``metadata.csv`` (``../shared/data/cxr_train``: NIH ChestX-ray14 adults and Kermany children).

Two steps, around ``meddiff prepare``:

    python scripts/cxr_vdm_data.py films  ../shared/data/cxr_train runs/cxr_train_by_patient --split train
    meddiff prepare -i runs/cxr_train_by_patient -o runs/prep_cxr64 --size 64 --clip-percentiles 0.5 99.5 \\
        --split 0.95 0.05 0
    python scripts/cxr_vdm_data.py labels ../shared/data/cxr_train runs/prep_cxr64

``films`` links (symbolic links, nothing copied) the films of one ``split`` of metadata.csv into one
sub-folder per patient, the layout ``meddiff prepare`` splits by (``--source adult|pediatric``: one
source's, e.g. the held-out films ``meddiff evaluate --generated`` compares with, per source). ``labels`` writes
``PREPARED/labels.csv`` (``case_id``, ``cxr_class``): each prepared film's class of
``meddiff.downstream.cxr.CXR_CLASSES`` (source and finding together, e.g. ``pediatric_viral``), joined
to the manifest by the film's file name. The config reads it as ``vdm.label_from: column:cxr_class``.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

from meddiff.downstream.cxr import ADULT, CXR_CLASSES, PEDIATRIC, read_films
from meddiff.errors import InputError
from meddiff.io.atomic import atomic_write_text


SOURCES = {"adult": ADULT, "pediatric": PEDIATRIC}


def slug(label: int) -> str:
    return CXR_CLASSES[label].replace(" ", "_")


def link_films(root: Path, out: Path, split: str, source: str = "all") -> int:
    films = [f for f in read_films(root, split) if source == "all" or f.source == SOURCES[source]]
    if not films:
        raise InputError(f"{root}/metadata.csv: no films with split == {split!r} and source {source!r}")
    for film in films:
        dest = out / film.patient_id / film.path.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.exists():
            os.symlink(film.path.resolve(), dest)
    return len(films)


def write_labels(root: Path, prepared: Path) -> int:
    by_name = {f.path.name: slug(f.label) for f in read_films(root)}
    manifest = prepared / "manifest.csv"
    if not manifest.is_file():
        raise InputError(f"{manifest}: no such file; expected a folder written by `meddiff prepare`")
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    lines = ["case_id,cxr_class"]
    for r in rows:
        name = Path(r["source"]).name
        if name not in by_name:
            raise InputError(f"{manifest}: case {r['case_id']} comes from {r['source']!r}, which is not a film of "
                             f"{root}/metadata.csv")
        lines.append(f"{r['case_id']},{by_name[name]}")
    atomic_write_text(prepared / "labels.csv", "\n".join(lines) + "\n")
    return len(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="step", required=True)
    f = sub.add_parser("films", help="link one split's films into one folder per patient")
    f.add_argument("root", type=Path)
    f.add_argument("out", type=Path)
    f.add_argument("--split", default="train")
    f.add_argument("--source", choices=("all", *SOURCES), default="all", help="one source's films only (held-out sets)")
    lab = sub.add_parser("labels", help="write PREPARED/labels.csv (case_id, cxr_class)")
    lab.add_argument("root", type=Path)
    lab.add_argument("prepared", type=Path)
    a = p.parse_args(argv)
    try:
        if a.step == "films":
            print(f"{link_films(a.root, a.out, a.split, a.source)} films linked under {a.out}")
        else:
            print(f"{write_labels(a.root, a.prepared)} labels written to {a.prepared / 'labels.csv'}")
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
