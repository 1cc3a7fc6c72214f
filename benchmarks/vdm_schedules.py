"""Fixed vs learned noise schedules of the VDM, on one budget and one held-out set.

For each schedule (vdm.gamma = fixed_linear | learned_linear | learned_nnet) the script trains the
same config for the same number of steps (same seed, same batches: only the schedule differs),
then scores the EMA model on a held-out split with the negative VLB in bits/dim, averaged over
--draws independent Monte-Carlo draws of (t, eps, eps_0) per slice, and prints one table: total,
the three terms (reconstruction, latent, diffusion), the schedule's endpoints gamma(0), gamma(1),
the training time, and the standard error over slices.

    python benchmarks/vdm_schedules.py --config configs/vdm_brain_unet.yaml --steps 600 \\
        --heldout runs/prep_colin32 --split test --out runs/bench_vdm_schedules

Training runs go to OUT/<schedule>/ (resumed if already there, so a stopped benchmark continues);
the table is printed and written to OUT/schedules.md and .csv.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch


def train(config: str, schedule: str, steps: int, out: Path, extra: list[str]) -> float:
    """Train (or resume) one schedule's run; returns its wall-clock training seconds (from the log)."""
    run = out / schedule
    resume = (run / "checkpoints" / "latest").is_file()
    cmd = [sys.executable, "-m", "meddiff.cli", "train", "--config", config, f"vdm.gamma={schedule}",
           f"train.steps={steps}", f"train.out_dir={run}", *extra, "--no-progress"] + (["--resume"] if resume else [])
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    with open(run / "train_log.csv") as f:
        rows = list(csv.DictReader(f))
    return float(rows[-1]["elapsed_s"]) if rows else float("nan")


def score(run: Path, heldout: str, split: str, draws: int, batch_size: int) -> dict[str, float]:
    """Mean bits/dim of each term over slices and draws, the slice-level standard error, endpoints."""
    from meddiff.data.dataset import PairDataset, load_prepared
    from meddiff.vdm.build import NoCondition
    from meddiff.vdm.checkpoint import load_vdm
    from meddiff.vdm.generate import TERMS, heldout_bpd

    vdm = load_vdm(run)
    prep = load_prepared(heldout)
    ds = PairDataset(prep, split, NoCondition(), crop=0, train=False, seed=0)
    per = {k: [] for k in TERMS}
    for d in range(draws):
        res = heldout_bpd(vdm.model, ds, timesteps=vdm.cfg.vdm.timesteps, vocab_size=vdm.cfg.vdm.vocab_size,
                          seed=1000 * d, batch_size=batch_size)
        for k in TERMS:
            per[k].append(res.per_slice[k])
    out = {k: float(np.mean(per[k])) for k in TERMS}
    slice_means = np.mean(per["total"], axis=0)  # [N] mean over draws
    out["stderr"] = float(slice_means.std(ddof=1) / np.sqrt(len(slice_means)))
    out["slices"] = len(slice_means)
    with torch.no_grad():
        ends = vdm.model.gamma(torch.tensor([0.0, 1.0]))
    out["gamma0"], out["gamma1"] = float(ends[0]), float(ends[1])
    out["step"] = vdm.step
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/vdm_brain_unet.yaml")
    p.add_argument("--schedules", nargs="+", default=["fixed_linear", "learned_nnet"],
                   choices=["fixed_linear", "learned_linear", "learned_nnet"])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--heldout", required=True, help="prepared folder of the held-out data (meddiff prepare --size 32)")
    p.add_argument("--split", default="test")
    p.add_argument("--draws", type=int, default=4, help="Monte-Carlo draws of (t, eps) per held-out slice")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--score-only", action="store_true", help="do not train: score the runs already in --out")
    p.add_argument("overrides", nargs="*", help="extra SECTION.KEY=VALUE passed to every training run")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for s in a.schedules:
        secs = float("nan") if a.score_only else train(a.config, s, a.steps, a.out, a.overrides)
        t0 = time.time()
        r = score(a.out / s, a.heldout, a.split, a.draws, a.batch_size)
        rows.append({"schedule": s, **r, "train_s": secs, "score_s": time.time() - t0})
    head = ("| schedule | step | total bits/dim | ± s.e. | reconstruction | latent | diffusion | gamma(0) | gamma(1) "
            "| train min |\n|---|---|---|---|---|---|---|---|---|---|")
    lines = [head] + [
        f"| {r['schedule']} | {r['step']} | {r['total']:.4f} | {r['stderr']:.4f} | {r['reconstruction']:.4f} "
        f"| {r['latent']:.2e} | {r['diffusion']:.4f} | {r['gamma0']:.2f} | {r['gamma1']:.2f} | {r['train_s'] / 60:.1f} |"
        for r in rows]
    note = (f"\nHeld out: {a.heldout} split {a.split!r}, {rows[0]['slices']} slices, {a.draws} draws of (t, eps, eps_0) "
            f"per slice; s.e. over slices of the per-slice mean. Config {a.config}, {a.steps} steps each.")
    text = "\n".join(lines) + note
    print(text)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "schedules.md").write_text(text + "\n")
    with open(a.out / "schedules.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
