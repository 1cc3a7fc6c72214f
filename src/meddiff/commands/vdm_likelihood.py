"""`meddiff evaluate --likelihood --checkpoint CKPT --prepared DIR [--split test]`: held-out bits/dim of a VDM.

Every slice of the split (centre-cropped to data.crop like the validation set, as the model
was trained on crops of that size) is scored by the negative VLB of the EMA model in bits/dim,
the mean of --draws independent Monte-Carlo draws of (t, eps, eps_0) per slice (default 1;
vdm.likelihood.heldout_likelihood, the one entry point). Printed and, with
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

from ..errors import InputError, flag_errors
from ..io.atomic import atomic_write_text

log = logging.getLogger(__name__)


@flag_errors  # the library names a setting by its field; here it is a flag
def run(args: argparse.Namespace) -> int:
    from ..checkpointing.named import locate
    from ..config.device import pick_device
    from ..vdm.generate import TERMS
    from ..vdm.likelihood import heldout_likelihood

    if args.checkpoint is None or args.prepared is None:
        raise InputError("--likelihood needs --checkpoint CKPT and --prepared DIR")
    vdm, res = heldout_likelihood(locate(args.checkpoint), args.prepared, split=args.split, draws=args.draws, seed=args.seed,
                                  batch_size=args.batch_size, device=pick_device("auto"))
    cfg = vdm.cfg
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
