"""Train the downstream models of meddiff.downstream and write their checkpoints (seeded, one CPU thread).

    python scripts/train_downstream.py seg [--steps 650] [--out src/meddiff/checkpoints/seg_mni152_tissue.safetensors]
    python scripts/train_downstream.py cls --label orientation|level [--steps 300] [--out ...]

Data: MNI152 2009a from the nilearn wheel (T1 and grey/white-matter probability maps, 1 mm),
every slice of the three orientations, cut and prepared like the shipped samples
(meddiff.downstream.slices). Held out: the central slab 0.4 <= position < 0.6 of every
orientation, with 3% of the range on each side left out of both sets. Prints the held-out
scores (segmenter: Dice on the MNI152 slab; classifier: accuracy on the slab and on the shipped
Colin27 slices, clean and after x4/x8/x16 SR degradation with bicubic restoration) and stores
them with the recipe in the file's metadata.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from meddiff.data.degrade import SuperResolution
from meddiff.downstream.models import CLS_FORMAT, SEG_FORMAT, Classifier, Segmenter, write_checkpoint
from meddiff.downstream.nets import SegUNet, SliceClassifier
from meddiff.downstream.slices import (LEVEL_CLASSES, ORIENTATIONS, TISSUE_CLASSES, gap_mask, holdout_mask,
                                       load_colin27_samples, load_mni152)
from meddiff.downstream.train import Recipe, heldout_accuracy, heldout_dice, predict_batches, train_model

ROOT = Path(__file__).resolve().parents[1]
CKPT = ROOT / "src" / "meddiff" / "checkpoints"


def degraded(images: np.ndarray, factor: float) -> np.ndarray:
    """Anti-aliased downsampling by factor, bicubic back (meddiff.data.degrade.SuperResolution)."""
    x = torch.from_numpy(images)[:, None]
    return SuperResolution(factor, "bicubic")(x)[0][:, 0].numpy()


def run_seg(args: argparse.Namespace) -> None:
    data = load_mni152()
    test, gap = holdout_mask(data), gap_mask(data)
    train = ~test & ~gap
    print(f"MNI152 slices: {len(test)} ({int(train.sum())} train, {int(test.sum())} held out, {int(gap.sum())} gap)")
    r = Recipe(steps=args.steps, batch=16, lr=2e-3, crop=96, seed=args.seed)
    net = SegUNet(len(TISSUE_CLASSES))
    t0 = time.perf_counter()
    train_model(net, data.images[train], data.tissue[train], r, dense=True)
    seconds = time.perf_counter() - t0
    seg = Segmenter(net, TISSUE_CLASSES)
    scores = {}
    for name, f in (("clean", None), ("x4", 4.0), ("x8", 8.0), ("x16", 16.0)):
        imgs = data.images[test] if f is None else degraded(data.images[test], f)
        d = heldout_dice(seg, imgs, data.tissue[test])
        scores[name] = {"grey_matter": float(d[:, 0].mean()), "white_matter": float(d[:, 1].mean()), "mean": float(d.mean())}
        print(f"held-out MNI152 Dice ({name}): GM {scores[name]['grey_matter']:.4f}  WM {scores[name]['white_matter']:.4f}  "
              f"mean {scores[name]['mean']:.4f}")
    recipe = {"data": "MNI152 2009a nonlinear symmetric (nilearn wheel), t1 + gm/wm probability maps, all slices of 3 orientations",
              "labels": "argmax(1 - gm - wm, gm, wm): 0 other/background, 1 grey matter, 2 white matter",
              "held_out": "central slab 0.4 <= position < 0.6 per orientation, 3% gap each side",
              "train_slices": int(train.sum()), "test_slices": int(test.sum()), **r.to_dict(),
              "seconds": round(seconds, 1), "threads": 1, "heldout_dice": scores}
    out = write_checkpoint(args.out or CKPT / "seg_mni152_tissue.safetensors", net, SEG_FORMAT, TISSUE_CLASSES, recipe)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB), {seconds:.0f} s of training")


def run_cls(args: argparse.Namespace) -> None:
    data, colin = load_mni152(), load_colin27_samples()
    test, gap = holdout_mask(data), gap_mask(data)
    train = ~test & ~gap
    if args.label == "orientation":
        names, y, cy, keep_c = ORIENTATIONS, data.orientation, colin.orientation, np.ones(len(colin.level), bool)
    else:
        names, y, cy, keep_c = LEVEL_CLASSES, data.level, colin.level, colin.level >= 0
        train &= data.level >= 0
        test &= data.level >= 0
        # the central slab of the axial axis is all "middle": test levels on every slab instead (Colin27 is the real test)
    r = Recipe(steps=args.steps, batch=32, lr=2e-3, crop=0, seed=args.seed)
    net = SliceClassifier(len(names))
    t0 = time.perf_counter()
    train_model(net, data.images[train], y[train], r, dense=False)
    seconds = time.perf_counter() - t0
    clf = Classifier(net, names)
    scores = {"mni152_heldout": heldout_accuracy(clf, data.images[test], y[test])}
    for name, f in (("clean", None), ("x4", 4.0), ("x8", 8.0), ("x16", 16.0)):
        imgs = colin.images[keep_c] if f is None else degraded(colin.images[keep_c], f)
        scores[f"colin27_{name}"] = heldout_accuracy(clf, imgs, cy[keep_c])
    print("accuracy: " + "  ".join(f"{k} {v:.4f}" for k, v in scores.items()))
    recipe = {"data": "MNI152 2009a nonlinear symmetric (nilearn wheel) t1, all slices of 3 orientations",
              "label": args.label, "held_out": "central slab 0.4 <= position < 0.6 per orientation, 3% gap each side; "
              "test anatomy: shipped Colin27 slices", "train_slices": int(train.sum()), **r.to_dict(),
              "seconds": round(seconds, 1), "threads": 1, "accuracy": scores}
    out = write_checkpoint(args.out or CKPT / f"cls_{args.label}.safetensors", net, CLS_FORMAT, names, recipe)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB), {seconds:.0f} s of training")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("seg")
    s.add_argument("--steps", type=int, default=650)
    c = sub.add_parser("cls")
    c.add_argument("--label", choices=("orientation", "level"), default="orientation")
    c.add_argument("--steps", type=int, default=300)
    for q in (s, c):
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    (run_seg if args.what == "seg" else run_cls)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
