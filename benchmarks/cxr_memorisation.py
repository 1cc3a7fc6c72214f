"""Memorisation check of a chest-film generator: each generated film's nearest training film (pixel L2 on
[-1, 1], at the generated size) against the held-out test films' own nearest-training distances.

    python benchmarks/cxr_memorisation.py --generated runs/vdm_samples --train runs/prep_cxr64 --test TEST_DIR [TEST_DIR ...]

A generated film nearer its nearest training film than the 5th percentile of the test films' distances
would be a copy-like sample; the script prints how many there are and the distance quantiles.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from meddiff.metrics.generation import read_image_set


def nearest(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """RMS distance of each image of a [N, H, W] to its nearest image of b [M, H, W]."""
    x, y = torch.from_numpy(a.reshape(len(a), -1)).double(), torch.from_numpy(b.reshape(len(b), -1)).double()
    return (torch.cdist(x, y).min(1).values / x.shape[1] ** 0.5).numpy()


def at_size(images, size: int) -> np.ndarray:
    """Films [N, H, W] (an array or a list of arrays) area-averaged to [N, size, size]."""
    x = torch.from_numpy(np.stack(images).astype(np.float32))[:, None]
    return F.interpolate(x, size=(size, size), mode="area")[:, 0].numpy()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generated", type=Path, required=True)
    ap.add_argument("--train", type=Path, required=True, help="a `meddiff prepare` folder (its train split)")
    ap.add_argument("--test", type=Path, nargs="+", required=True, help="folders of held-out films, one per source")
    a = ap.parse_args(argv)
    gen = np.stack(read_image_set(a.generated))
    size = gen.shape[-1]
    train = np.stack(read_image_set(a.train, "train"))
    train = at_size(train, size)
    d_gen = nearest(gen, train)
    print(f"{len(gen)} generated, {len(train)} training films at {size}x{size}")
    print("| set | n | nearest-training RMS distance: 5th pct | median | generated below the set's 5th pct |")
    print("|---|---:|---:|---:|---:|")
    print(f"| generated | {len(gen)} | {np.percentile(d_gen, 5):.4f} | {np.median(d_gen):.4f} | |")
    for t in a.test:
        test = np.stack(read_image_set(t))
        test = at_size(test, size)
        d_test = nearest(test, train)
        p5 = np.percentile(d_test, 5)
        print(f"| test {t.name} | {len(test)} | {p5:.4f} | {np.median(d_test):.4f} | {int((d_gen < p5).sum())} of {len(gen)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
