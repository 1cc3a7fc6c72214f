"""Seconds per training step of the chest X-ray presets on one CPU thread.

For each preset (configs/vdm_cxr32.yaml, vdm_cxr64.yaml, vdm_cxr128.yaml, denoise_cxr.yaml) the
script prepares the one real chest film available offline (pydicom-data's RG1_UNCR.dcm, CR,
MONOCHROME1, 1955x1841) at the preset's size with 0.5/99.5 percentile normalisation, trains
--steps steps with `meddiff train` (train.threads=1, log every step) and reports the median wall
seconds per step over steps 2.. (step 1 includes one-time set-up) and the CPU seconds per step
(see `seconds_per_step`: robust when the machine is shared), with the batch size and the
parameter count. This measures cost, not quality: one film cannot train a generator.

    python benchmarks/cxr_presets.py --steps 8 --out runs/bench_cxr_presets

Prints a Markdown table and writes OUT/cxr_presets.md.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

PRESETS = {"vdm_cxr32": 32, "vdm_cxr64": 64, "vdm_cxr128": 128, "denoise_cxr": 256}


def film() -> Path:
    from pydicom.data import get_testdata_file

    path = get_testdata_file("RG1_UNCR.dcm")
    if path is None:
        raise SystemExit("pydicom-data's RG1_UNCR.dcm is not installed (pip install pydicom-data)")
    return Path(path)


def prepare(size: int, out: Path) -> Path:
    src = out / "films" / "rg1"
    src.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(film(), src / "RG1_UNCR.dcm")
    prep = out / f"prep{size}"
    if not prep.exists():
        subprocess.run(["meddiff", "prepare", str(out / "films"), str(prep), "--size", str(size), "--clip-percentiles",
                        "0.5", "99.5", "--split", "1", "0", "0", "--no-progress"], check=True)
    return prep


def _train(name: str, prep: Path, steps: int, run: Path) -> float:
    """Run `meddiff train` for `steps` steps; returns the CPU seconds (user + system) it used."""
    shutil.rmtree(run, ignore_errors=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(["meddiff", "train", "--no-progress", "--config", f"configs/{name}.yaml", "--out", str(run),
                    f"data.prepared={prep}", f"train.steps={steps}", "train.log_every=1", f"train.ckpt_every={steps}",
                    "train.threads=1", "train.device=cpu"], check=True, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def seconds_per_step(name: str, prep: Path, steps: int, out: Path) -> tuple[float, float, int]:
    """(median wall seconds per step over steps 2.., CPU seconds per step, batch size). The CPU figure
    is the difference of a 2-step and a (2 + steps)-step run divided by `steps` (set-up cancels); it
    barely changes when other processes share the cores, while the wall time does."""
    run = out / name
    cpu_short = _train(name, prep, 2, run)
    cpu_long = _train(name, prep, 2 + steps, run)
    with open(run / "train_log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    batch = int(yaml.safe_load(open(f"configs/{name}.yaml"))["train"]["batch_size"])
    per_step = [batch / float(r["images_per_s"]) for r in rows[1:]]
    return float(np.median(per_step)), (cpu_long - cpu_short) / steps, batch


def n_params(name: str, prep: Path) -> int:
    from meddiff import config as config_mod
    from meddiff.nn.unet import build_unet

    cfg = config_mod.from_dict(yaml.safe_load(open(f"configs/{name}.yaml")))
    return sum(p.numel() for p in build_unet(cfg.model, 1 if cfg.objective == "vdm" else 2, 1).parameters())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--out", type=Path, default=Path("runs/bench_cxr_presets"))
    ap.add_argument("--only", default=",".join(PRESETS), help="comma-separated preset names")
    args = ap.parse_args()
    lines = [f"load average at start: {os.getloadavg()[0]:.1f} (2 cores)", "",
             "| preset | size | batch | U-Net parameters | wall s / step | CPU s / step (1 thread) |",
             "|---|---:|---:|---:|---:|---:|"]
    for name in args.only.split(","):
        size = PRESETS[name]
        prep = prepare(size, args.out)
        sec, cpu, batch = seconds_per_step(name, prep, args.steps, args.out)
        shown = f"{size} (crops 64)" if name == "denoise_cxr" else str(size)
        lines.append(f"| {name} | {shown} | {batch} | {n_params(name, prep):,} | {sec:.2f} | {cpu:.2f} |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cxr_presets.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
