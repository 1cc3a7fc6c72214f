"""`meddiff evaluate --likelihood --checkpoint CKPT --prepared DIR [--split test]`: held-out bits/dim of a VDM.

Every slice of the split (centre-cropped to data.crop like the validation set, as the model
was trained on crops of that size) is scored by the negative VLB of the EMA model in bits/dim,
the mean of --draws independent Monte-Carlo draws of (t, eps, eps_0) per slice (default 1;
vdm.generate.heldout_bpd). Printed and, with
--out, written as likelihood.json (mean and standard error of total and each term, slices,
settings) and likelihood_per_slice.csv. Class-conditional models read each slice's label as
at training time (vdm.label_from of the checkpoint's config) and map it by class name.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
from pathlib import Path

import torch

from ..errors import InputError
from ..io.atomic import atomic_write_text

log = logging.getLogger(__name__)


def run(args: argparse.Namespace) -> int:
    from ..data.dataset import PairDataset, load_prepared
    from ..data.degrade import build_degradation
    from ..train.distributed import pick_device
    from ..vdm.build import NoCondition, case_labels, label_indices
    from ..vdm.checkpoint import load_vdm
    from ..vdm.generate import TERMS, heldout_bpd

    if args.checkpoint is None or args.prepared is None:
        raise InputError("--likelihood needs --checkpoint CKPT and --prepared DIR")
    if args.batch_size < 1:
        raise InputError(f"--batch-size {args.batch_size}: expected >= 1")
    if args.draws < 1:
        raise InputError(f"--draws {args.draws}: expected >= 1")
    from ..models import resolve_checkpoint

    device = pick_device("auto")
    vdm = load_vdm(resolve_checkpoint(args.checkpoint), device=device)
    cfg = vdm.cfg
    prep = load_prepared(args.prepared)
    deg = build_degradation(cfg.task) if cfg.vdm.image_condition else NoCondition()
    crop = vdm.data_shape[-1] if cfg.vdm.score != "unet" else cfg.data.crop
    size = int(prep.arrays[args.split].shape[-1]) if args.split in prep.arrays else 0
    if cfg.vdm.score != "unet" and size < crop:
        raise InputError(f"{args.prepared}: slices are {size}x{size} but the model takes {crop}x{crop} (dense score network)")
    ds = PairDataset(prep, args.split, deg, crop=crop if crop < size else 0, train=False, seed=args.seed)
    labels_of = lambda ids: None  # noqa: E731
    if vdm.class_names:
        by_case = case_labels(prep, [args.split], cfg.vdm.label_from, cfg.vdm.labels_csv)
        index = dict(zip(by_case, label_indices(list(by_case.values()), vdm.class_names)))
        labels_of = lambda ids: torch.tensor([index[c] for c in ids], dtype=torch.long)  # noqa: E731
    cond_of = (lambda c, m: deg.model_condition(c, m)) if cfg.vdm.image_condition else (lambda c, m: None)
    res = heldout_bpd(vdm.model, ds, timesteps=cfg.vdm.timesteps, vocab_size=cfg.vdm.vocab_size, seed=args.seed,
                      batch_size=args.batch_size, labels_of=labels_of, cond_of=cond_of, device=device,
                      draws=args.draws)
    n = len(res.case_ids)
    lines = [f"negative VLB of {vdm.file} (step {vdm.step}) on {n} slices of split {args.split!r} of {args.prepared}",
             "term            bits/dim     std. error"]
    lines += [f"{k:14s} {res.mean(k):10.5f}  {res.stderr(k):10.5f}" for k in TERMS]
    print("\n".join(lines))
    if args.out is not None:
        out = Path(args.out)
        doc = {"checkpoint": str(vdm.file), "step": vdm.step, "prepared": str(args.prepared), "split": args.split,
               "slices": n, "seed": args.seed, "draws": args.draws, "timesteps": cfg.vdm.timesteps, "gamma": cfg.vdm.gamma,
               "bits_per_dim": {k: {"mean": res.mean(k), "stderr": res.stderr(k)} for k in TERMS}}
        atomic_write_text(out / "likelihood.json", json.dumps(doc, indent=1) + "\n")
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["case_id", *TERMS])
        for i, c in enumerate(res.case_ids):
            w.writerow([c, *(f"{res.per_slice[k][i]:.6g}" for k in TERMS)])
        atomic_write_text(out / "likelihood_per_slice.csv", buf.getvalue())
        log.info("wrote likelihood.json and likelihood_per_slice.csv to %s", out)
    return 0
