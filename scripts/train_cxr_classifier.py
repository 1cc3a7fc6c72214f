"""Train the chest-film finding classifier (meddiff.downstream.cxr) on the TRAIN split of a chest-film folder.

    python scripts/train_cxr_classifier.py --data ../shared/data/cxr_train [--steps 1500] [--out src/meddiff/checkpoints/cls_cxr.safetensors]

Data: the films of ``metadata.csv`` with ``split == train`` only (NIH ChestX-ray14 adults: normal /
pneumonia; Kermany children: normal / bacterial / viral), each scaled by its own 0.5 / 99.5
percentiles to [-1, 1] and area-averaged to 128 x 128. A validation set of about 10% of the
training *patients* (seeded) is held out of training to report a score that saw no test film; the
test split is never read here (benchmarks/cxr_downstream.py scores it). The network
(nets.SliceClassifier), the augmentation and the loop are meddiff.downstream.train's, one CPU thread.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from meddiff.downstream.cxr import (CLS_CXR_FILE, CXR_CLASSES, CXR_INPUT_NOTE, SOURCE_CLASSES, classifier_input,
                                    read_films, source_probabilities, within_source_labels)
from meddiff.downstream.metrics import macro_auroc
from meddiff.downstream.models import CLS_FORMAT, write_checkpoint
from meddiff.downstream.nets import SliceClassifier
from meddiff.downstream.train import Recipe, predict_batches, train_model
from meddiff.metrics.generation import percentile_scale

ROOT = Path(__file__).resolve().parents[1]


def load(films) -> np.ndarray:
    """[N, 128, 128] float32 in [-1, 1]."""
    x = np.stack([percentile_scale(np.asarray(Image.open(f.path).convert("L"), np.float32)) for f in films])
    return classifier_input(x)[:, 0].numpy()


def val_patients(patients: list[str], fraction: float, seed: int) -> set[str]:
    ids = sorted(set(patients))
    rng = np.random.default_rng(seed)
    return set(rng.permutation(ids)[: max(1, round(fraction * len(ids)))].tolist())


def per_source_scores(net, images: np.ndarray, films) -> dict:
    logits = predict_batches(net, images)
    out = {}
    for source in SOURCE_CLASSES:
        keep = np.array([f.source == source for f in films])
        if not keep.any():
            continue
        p = source_probabilities(logits[torch.from_numpy(keep)], source).numpy()
        y = within_source_labels(np.array([f.label for f in films])[keep], source)
        out[source] = {"n": int(keep.sum()), "accuracy": float((p.argmax(1) == y).mean()),
                       "auroc": macro_auroc(p, y) if len(set(y.tolist())) == p.shape[1] else None}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=next((p / "shared/data/cxr_train" for p in ROOT.parents[:3]
                                                       if (p / "shared/data/cxr_train").is_dir()), ROOT.parent / "shared/data/cxr_train"))
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64, 64, 64])
    ap.add_argument("--val-fraction", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=CLS_CXR_FILE)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    films = read_films(a.data, split="train")
    val_ids = val_patients([f.patient_id for f in films], a.val_fraction, a.seed)
    train = [f for f in films if f.patient_id not in val_ids]
    val = [f for f in films if f.patient_id in val_ids]
    t0 = time.perf_counter()
    x_train, x_val = load(train), load(val)
    y_train = np.array([f.label for f in train])
    print(f"{len(train)} training films, {len(val)} validation films ({len(val_ids)} patients), "
          f"class counts {np.bincount(y_train, minlength=len(CXR_CLASSES)).tolist()}, read in {time.perf_counter() - t0:.0f} s")
    r = Recipe(steps=a.steps, batch=a.batch, lr=a.lr, crop=0, seed=a.seed)
    net = SliceClassifier(len(CXR_CLASSES), a.channels)
    t0 = time.perf_counter()
    losses = train_model(net, x_train, y_train, r, dense=False, log_every=100)
    seconds = time.perf_counter() - t0
    val_scores = per_source_scores(net, x_val, val)
    for s, v in val_scores.items():
        print(f"validation {s}: n {v['n']}  accuracy {v['accuracy']:.4f}  AUROC {v['auroc']}")
    recipe = {"data": f"{a.data.name}/metadata.csv split == train: NIH ChestX-ray14 adult films (normal: 'No Finding'; "
                      "pneumonia: labels with 'Pneumonia') and Kermany pediatric films (normal / bacterial / viral)",
              "held_out": f"validation: {len(val_ids)} training patients ({len(val)} films, seed {a.seed}); "
                          "the test split is never read in training",
              "train_films": len(train), "input_size": 128, **r.to_dict(), "seconds": round(seconds, 1), "threads": 1,
              "final_loss_mean_last_100": float(np.mean(losses[-100:])), "validation": val_scores,
              "licence": "NIH ChestX-ray14 terms (attribution) and Kermany CC BY 4.0; see src/meddiff/checkpoints/README.md"}
    out = write_checkpoint(a.out, net, CLS_FORMAT, CXR_CLASSES, recipe, input_note=CXR_INPUT_NOTE)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB), {seconds:.0f} s of training")
    return 0


if __name__ == "__main__":
    sys.exit(main())
