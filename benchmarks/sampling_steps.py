"""Quality cost of fewer sampling steps, per sampler, against the long ancestral chain.

On held-out real slices (Colin27; the shipped model was trained on MNI152), for each sampler
and number of steps prints PSNR, SSIM, accutance and gradient ratio against the ground truth,
agreement (PSNR) with the longest ancestral chain from the same seeds, and wall time per slice.

    python benchmarks/sampling_steps.py --checkpoint src/meddiff/checkpoints/demo_sr_x4.safetensors \
        --slices 4 --runs ancestral:10,20,50,100,250,2000 ddim:10,20,50 dpm_solver_pp:5,10,20
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from meddiff.data.degrade import SuperResolution
from meddiff.data.prepare import PrepareOptions, prepare
from meddiff.data.dataset import load_prepared
from meddiff.data.samples import samples_dir
from meddiff.inference import restore
from meddiff.metrics.image import accutance, psnr, ssim
from meddiff.train.checkpoint import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--slices", type=int, default=8)
    ap.add_argument("--runs", nargs="+", default=["ancestral:10,20,50,100,250,2000", "ddim:10,20,50", "dpm_solver_pp:5,10,20"],
                    help="SAMPLER:STEPS,STEPS,... (ddim runs with eta 0)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prepared", default="runs/prepared_colin27")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg, _, denoiser = load_model(args.checkpoint, expect_task="sr")
    try:
        prep = load_prepared(args.prepared)
    except Exception:
        prepare(samples_dir("colin27"), args.prepared, PrepareOptions(split=(0, 0, 1), size=cfg.data.size, overwrite=True), progress=False)
        prep = load_prepared(args.prepared)
    test = prep.arrays["test"]
    idx = np.linspace(0, len(test) - 1, args.slices).round().astype(int)
    x0 = torch.from_numpy(np.asarray(test[idx], np.float32))[:, None]
    deg = SuperResolution(cfg.task.sr_factor, cfg.task.sr_upsample)
    cond = deg.upsample(deg.downsample(x0), tuple(x0.shape[-2:]))
    truth = x0.numpy()  # [N, 1, H, W]

    def scores(img: np.ndarray) -> tuple[float, float, float, float]:
        return (float(np.mean(psnr(img, truth, 2.0))), float(np.mean(ssim(img, truth, 2.0))),
                float(np.mean(accutance(img, 2.0))), float(np.mean(accutance(img, 2.0) / accutance(truth, 2.0))))

    options = {"ancestral": {"variance": cfg.diffusion.variance}, "ddim": {"eta": 0.0}}
    results = {}
    for run in args.runs:
        name, steps = run.split(":")
        for n in sorted(int(x) for x in steps.split(",")):
            t = time.perf_counter()
            out = restore(denoiser, cond, sampler=name, steps=n, samples=1, seed=args.seed, batch_size=8, progress=False,
                          **options.get(name, {}))[0].numpy()
            results[(name, n)] = (out, (time.perf_counter() - t) / len(idx))
            print(f"  {name} {n} steps: {results[(name, n)][1]:.2f} s per slice", flush=True)
    ref_key = max((k for k in results if k[0] == "ancestral"), key=lambda k: k[1])
    ref = results[ref_key][0]
    print(f"checkpoint {args.checkpoint}; {len(idx)} Colin27 slices {tuple(x0.shape[-2:])}, x{cfg.task.sr_factor:g}, seed {args.seed}\n")
    print(f"\nreference for agreement: {ref_key[0]} {ref_key[1]} steps\n")
    print("| method | steps | PSNR dB | SSIM | accutance | gradient ratio | PSNR vs longest chain | s per slice |")
    print("|---|---|---|---|---|---|---|---|")
    b = scores(cond.numpy())
    print(f"| bicubic | - | {b[0]:.2f} | {b[1]:.3f} | {b[2]:.2f} | {b[3]:.2f} | - | 0 |")
    for (name, n), (out, sec) in results.items():
        s = scores(out)
        agree = "-" if (name, n) == ref_key else f"{float(np.mean(psnr(out, ref, 2.0))):.2f}"
        print(f"| {name} | {n} | {s[0]:.2f} | {s[1]:.3f} | {s[2]:.2f} | {s[3]:.2f} | {agree} | {sec:.2f} |")
    t = scores(truth)
    print(f"| ground truth | - | inf | 1.000 | {t[2]:.2f} | 1.00 | - | - |")


if __name__ == "__main__":
    main()
