"""Fit the domain check's thresholds (meddiff.domain) on TRAINING-side images and store them in the card.

    python scripts/domain_thresholds.py MODEL.safetensors --prepared runs/prep_mni [--images 48] \\
        [--out runs/domain_fit] [--write]

Training side only (never the held-out sources of benchmarks/domain_check.py): the prepared
MNI152 2009a T1 slices the model trained on (128^2) and fresh draws of meddiff.data.synth (random
contrast MNI152 tissue slices and random label fields), as 128^2 images and 64^2 crops; each
degraded x4 by the anti-aliased bicubic kernel the model trained on and by every k-space kernel of
meddiff.data.acquisition, without and with complex k-space noise. For each input: the label (does
the model, with its stored default sampler, beat bicubic in PSNR against the truth) and the check's
signals (meddiff.domain.signals). The fit (meddiff.domain.fit_thresholds) picks, per signal, the
threshold that flags the most losing inputs while flagging at most `--false-alarm` of the winning
inputs, one signal at a time (greedily, on the inputs not flagged yet). Writes OUT/fit_inputs.csv and
OUT/thresholds.json; --write stores the thresholds in the model file's card (checkpointing.update_metadata).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch

DEGRADATIONS = ("bicubic", "kspace_none", "kspace_hamming", "kspace_tukey", "kspace_fermi", "pf58_zerofill",
                "pf58_homodyne", "zip2")
NOISE = (0.01, 0.02, 0.04)  # k-space noise std ([0, 1] range) of the noisy cases (kspace_none and kspace_hamming)


def truths(prepared: Path, n: int, seed: int = 2029) -> list[tuple[str, np.ndarray]]:
    """(kind, image [S, S] in [-1, 1]): n prepared training slices, n synthetic brains, n/2 label fields;
    each as the 128^2 image and a 64^2 crop of it."""
    from meddiff.data.dataset import load_prepared
    from meddiff.data.synth import mni_tissue_slices, synth_brain, synth_shapes

    train = np.asarray(load_prepared(prepared).arrays["train"], np.float32)
    fg = (train > -0.9).mean(axis=(1, 2))
    keep = np.flatnonzero(fg > 0.25)
    idx = keep[np.linspace(0, len(keep) - 1, n).round().astype(int)]
    g = torch.Generator().manual_seed(seed)
    tissue = mni_tissue_slices(train.shape[-1])
    imgs = [("mni152", train[i]) for i in idx]
    imgs += [("synth_brain", synth_brain(tissue, g)[0].numpy()) for _ in range(n)]
    imgs += [("synth_shapes", synth_shapes(train.shape[-1], g)[0].numpy()) for _ in range(n // 2)]
    out = []
    for k, (kind, a) in enumerate(imgs):
        out.append((kind, a))
        o = 16 + 8 * (k % 5)
        out.append((kind, np.ascontiguousarray(a[o:o + 64, o:o + 64])))
    return out


INIA19 = Path("/usr/share/mricron/templates/inia19-t1-brain.nii.gz")  # Debian mricron-data: a rhesus macaque T1 template


def _fg_crops(vol: np.ndarray, n: int, size: int = 128) -> list[np.ndarray]:
    """n central size^2 crops of axial planes [Z, Y, X] (min/max normalised per volume) spread over the
    planes whose crop is at least 30% foreground."""
    v = vol.astype(np.float64)
    v = ((v - v.min()) / max(v.max() - v.min(), 1e-12) * 2 - 1).astype(np.float32)
    i, j = (v.shape[1] - size) // 2, (v.shape[2] - size) // 2
    crops = [np.ascontiguousarray(v[z, i:i + size, j:j + size]) for z in range(len(v))]
    crops = [c for c in crops if (c > -0.9).mean() >= 0.3]
    return [crops[k] for k in np.linspace(0, len(crops) - 1, min(n, len(crops))).round().astype(int)]


def real_crops(n: int, calibration: bool) -> list[tuple[str, np.ndarray]]:
    """(kind, image): 128^2 crops of the 1 mm MNI152 2009a T1 volume (training data, as scans are cropped,
    not resized to 128) and, with `calibration`, of the inia19 macaque T1 template (a calibration split:
    real MR reported nowhere), each with a 64^2 crop of it."""
    from nilearn import datasets

    from meddiff.io import read_volume

    mni = np.transpose(np.asarray(datasets.load_mni152_template(resolution=1).dataobj, np.float32), (2, 1, 0))[:, ::-1]
    imgs = [("mni152_crop", c) for c in _fg_crops(mni, n)]
    if calibration:
        imgs += [("inia19_calibration", c) for c in _fg_crops(read_volume(INIA19).array, n)]
    out = []
    for k, (kind, a) in enumerate(imgs):
        out += [(kind, a), (kind, np.ascontiguousarray(a[32 + 4 * (k % 5):96 + 4 * (k % 5), 32:96]))]
    return out


def degrade(x: np.ndarray, kernel: str, sigma: float, seed: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(condition [1, 1, H, W], delivered image [1, 1, h, w], H / h) as benchmarks/generalization.py makes them."""
    from meddiff.data.acquisition import low_res
    from meddiff.data.degrade import SuperResolution

    sr = SuperResolution(4.0)
    t = torch.from_numpy(x)[None, None]
    size = sr.low_res_size(t.shape[-2:])
    if kernel == "bicubic":
        lr = sr.downsample(t)
    else:
        lr = low_res((t.double() + 1) / 2, kernel, size, sigma, torch.Generator().manual_seed(seed)).float() * 2 - 1
    lr = lr.clamp(-1, 1)
    return sr.upsample(lr, t.shape[-2:]), lr, t.shape[-2] / lr.shape[-2]


def measure(model: str, prepared: Path, n: int, images=None) -> list[dict]:
    from meddiff.diffusion.checkpoint import load_model
    from meddiff.domain import signals
    from meddiff.samplers.run import restore, sampler_options
    from meddiff.metrics.image import psnr

    cfg, _, den = load_model(model, expect_task="sr")
    s = cfg.sampler
    opts = sampler_options(s.name, cfg.diffusion.variance, s.eta, s.grid)
    rows = []
    for i, (kind, x) in enumerate(truths(prepared, n) if images is None else images):
        for kernel, sigma in cases():
            cond, lr, factor = degrade(x, kernel, sigma, seed=i)
            y = restore(den, cond, sampler=s.name, steps=s.steps, seed=0, batch_size=1, progress=False, **opts)[0, 0]
            d = float(psnr(np.clip(y[0].numpy(), -1, 1), x, data_range=2.0) - psnr(cond[0, 0].numpy(), x, data_range=2.0))
            sig = signals(lr, factor, den, restored=y[None], score=min(lr.shape[-2:]) >= 32)
            rows.append({"kind": kind, "size": x.shape[0], "kernel": kernel, "sigma": sigma, "d_psnr": d, "loss": d <= 0} | sig)
        print(f"{i + 1} images", file=sys.stderr, end="\r")
    return rows


def cases() -> list[tuple[str, float]]:
    return [(k, 0.0) for k in DEGRADATIONS] + [(k, z) for k in ("kspace_none", "kspace_hamming") for z in NOISE]


def reuse(path: Path, prepared: Path, n: int) -> list[dict]:
    """The rows of an earlier run's OUT/fit_inputs.csv with the model-free signals recomputed on the
    same inputs (regenerated with the same seeds; the label, score and consistency kept: they need
    the model)."""
    from meddiff.domain import signals

    with open(path, newline="") as f:
        old = list(csv.DictReader(f))
    rows, j = [], 0
    for i, (kind, x) in enumerate(truths(prepared, n)):
        for kernel, sigma in cases():
            r = old[j]
            j += 1
            assert r["kernel"] == kernel and r["kind"] == kind, f"{path}: row {j} is not {kind} {kernel}; run without --reuse"
            _, lr, factor = degrade(x, kernel, sigma, seed=i)
            sig = signals(lr, factor, None, score=False)
            keep = {k: float(r[k]) if r.get(k) not in (None, "", "nan") else float("nan") for k in ("score", "consistency")}
            rows.append({"kind": kind, "size": x.shape[0], "kernel": kernel, "sigma": sigma, "d_psnr": float(r["d_psnr"]),
                         "loss": r["loss"] == "True"} | sig | keep)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--prepared", type=Path, required=True)
    p.add_argument("--images", type=int, default=24, help="prepared slices (and as many synthetic brains, half as many label fields)")
    p.add_argument("--false-alarm", type=float, default=0.05, help="largest share of winning inputs each signal may flag")
    p.add_argument("--out", type=Path, default=Path("runs/domain_fit"))
    p.add_argument("--reuse", action="store_true", help="reuse OUT/fit_inputs.csv (labels, score, consistency) of an "
                   "earlier run; the model-free signals are recomputed")
    p.add_argument("--crops", type=int, default=0, help="also this many 128^2 crops of the 1 mm MNI152 volume (real_crops)")
    p.add_argument("--calibration", action="store_true", help="with --crops: as many crops of the inia19 macaque T1 "
                   "template, a calibration split of real MR that no benchmark reports")
    p.add_argument("--per-kind", action="store_true", help="the false-alarm bound holds for each kind of image "
                   "separately (prepared slices, synthetic brains, label fields, crops, calibration), as the target holds per source")
    p.add_argument("--label", choices=("loss", "degradation"), default="loss",
                   help="what a flag should predict: loss = the model does not beat bicubic on the input (default); "
                        "degradation = the input was made by a kernel the model did not train on (not bicubic)")
    p.add_argument("--write", action="store_true", help="store the thresholds in the model file's card")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from meddiff.domain import SIGNALS, fit_thresholds, read_card, write_card

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "fit_inputs.csv"
    if args.reuse:
        rows = reuse(path, args.prepared, args.images)
    else:
        rows = measure(args.model, args.prepared, args.images)
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    if args.reuse:
        with open(args.out / "fit_inputs_signals.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    if args.label == "degradation":  # outside what the model trained on: every kernel but bicubic (issue 23, item 2)
        rows = [r | {"loss": r["kernel"] != "bicubic"} for r in rows]
    if args.crops:  # plus 128^2 / 64^2 crops of real MR: MNI152 at 1 mm and (--calibration) inia19
        extra = args.out / "fit_inputs_crops.csv"
        if not (args.reuse and extra.exists()):
            new = measure(args.model, args.prepared, args.crops, real_crops(args.crops, args.calibration))
            with open(extra, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(new[0]))
                w.writeheader()
                w.writerows(new)
        with open(extra, newline="") as f:
            rows += [{k: (v == "True") if k == "loss" else (v if k in ("kind", "kernel") else float(v) if v not in ("", "nan") else float("nan"))
                      for k, v in r.items()} for r in csv.DictReader(f)]
    thresholds = fit_thresholds(rows, SIGNALS, args.false_alarm, group="kind" if args.per_kind else None)
    wins = [r for r in rows if not r["loss"]]
    losses = [r for r in rows if r["loss"]]
    from meddiff.domain import flagged_by

    fa = sum(bool(flagged_by(r, thresholds)) for r in wins)
    det = sum(bool(flagged_by(r, thresholds)) for r in losses)
    what = "it loses on" if args.label == "loss" else "made by a kernel other than bicubic"
    note = (f"signal thresholds fitted by scripts/domain_thresholds.py (--label {args.label}) on {len(rows)} training-side inputs "
            f"(MNI152 2009a T1 slices and meddiff.data.synth random-contrast brains / label fields, 128^2 and 64^2, x4 by bicubic "
            f"and every k-space kernel of meddiff.data.acquisition, noise {list(NOISE)}"
            + (f"; plus 128^2/64^2 crops of the 1 mm MNI152 volume" if args.crops else "")
            + (" and of the inia19 macaque T1 template (Debian mricron-data) as a calibration split" if args.crops and args.calibration else "")
            + ("; false alarms bounded per kind of image" if args.per_kind else "")
            + f"); there they flag {fa}/{len(wins)} inputs "
            f"{'the model wins on' if args.label == 'loss' else 'made by bicubic'} and {det}/{len(losses)} {what}")
    result = {"thresholds": thresholds, "note": note}
    (args.out / f"thresholds_{args.label}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    if args.write:
        card = read_card(args.model)
        if card is None:
            raise SystemExit(f"{args.model}: has no domain card (scripts/domain_card.py writes one first)")
        notes = tuple(n for n in card.notes if not n.startswith("signal thresholds")) + (note,)
        write_card(args.model, dataclasses.replace(card, thresholds=thresholds, notes=notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
