"""End to end: seconds per 256x256 slice (x4 from 64x64) and peak memory, shipped model.

Modes, each in a fresh subprocess (its peak resident set is the mode's own):
  meddiff_fp32    meddiff.samplers.run.restore, the checkpoint's sampler (DPM-Solver++ 2M, 10 steps,
                  log-SNR grid), fp32
  meddiff_bf16    the same in bf16 (sampling runs a bf16 copy of the network, cast once)
  meddiff_auto    precision "auto" (bf16 where the device runs it natively, else fp32)
  meddiff_tiled   bf16 in 128x128 windows (overlap 32) through meddiff.samplers.tiling
  meddiff_bf16_20 bf16, 20 steps (the peer's step count)
  meddiff_linspace20  meddiff's DPM-Solver++ 2M, fp32, on the peer's 20 timesteps (diffusers'
                  default "linspace" spacing: 1999, 1899, ..., 100, then the x0 estimate at 100)
  meddiff_posterior_mean  one network call (the posterior_mean sampler, sr_x4_general's default), auto
  general_dpm10   the shipped sr_x4_general (the teacher) with DPM-Solver++ 10 steps, log-SNR grid, auto
  student_1call   the shipped distilled student sr_x4_general_1step (sampler "student"), one call, auto
  diffusers_dpm20 the same network weights under diffusers' DPMSolverMultistepScheduler
                  (dpmsolver++, order 2, 20 steps, its default spacing, prediction "sample" on the
                  residual x0 - bicubic(y) as the model was trained; no clipping), fp32

Truth: central Colin27 slices (never seen in training) prepared at 256x256; degraded by the
model's own x4 anti-aliased bicubic downsampling. Reported: network calls, s per slice (sampling
only, model loaded), per 180-slice volume (x 180), peak RSS, and against the truth PSNR, SSIM,
LPIPS (shift-tolerant AlexNet, meddiff.metrics.lpips; lower is closer) and the gradient ratio
(sharpness relative to the truth's, 1 = as sharp; below 1 = smoother).

Usage::

    python benchmarks/restore_speed.py --slices 2 --threads 1
    python benchmarks/restore_speed.py --modes meddiff_fp32,diffusers_dpm20
    python benchmarks/restore_speed.py --modes general_dpm10,student_1call --rounds 3   # alternating A B A B A B

--rounds N runs the mode list N times in turn (A B C A B C ...); the table gives each mode's median
seconds (shared machines: compare modes within one run, never across runs).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

MODES = ("meddiff_fp32", "meddiff_bf16", "meddiff_auto", "meddiff_tiled", "meddiff_bf16_20", "diffusers_dpm20",
         "meddiff_linspace20", "meddiff_posterior_mean", "general_dpm10", "student_1call")
OTHER_CHECKPOINTS = {"general_dpm10": ("sr_x4_general", "dpm_solver_pp", 10), "student_1call": ("sr_x4_general_1step", "student", 1)}


def linspace_timesteps(timesteps: int, steps: int) -> list[int]:
    """diffusers' default "linspace" spacing: round(linspace(0, T - 1, steps + 1)) without 0, descending."""
    import numpy as np

    return [int(k) for k in np.linspace(0, timesteps - 1, steps + 1).round()[::-1][:-1]]


def on_timesteps(denoiser, ks: list[int]):
    """The denoiser with its time_grid fixed to the timesteps `ks` (noisy to clean)."""
    import dataclasses

    import torch

    from meddiff.diffusion.denoiser import DDPMDenoiser
    from meddiff.diffusion.grid import grid_from_alpha_bar

    @dataclasses.dataclass
    class Fixed(DDPMDenoiser):
        def time_grid(self, steps, kind="uniform"):
            k = torch.tensor(ks, dtype=torch.int64)
            return grid_from_alpha_bar(k, self.sched.alpha_bar[k])

    return Fixed(**{f.name: getattr(denoiser, f.name) for f in dataclasses.fields(denoiser)})


def colin_cond(slices: int, size: int, workdir: Path):
    """(truth [N, 1, size, size], condition planes) from central Colin27 slices."""
    import numpy as np
    import torch

    from meddiff.data.dataset import load_prepared
    from meddiff.data.degrade import SuperResolution
    from meddiff.data.prepare import PrepareOptions, prepare
    from meddiff.data.samples import samples_dir

    out = workdir / f"colin27_{size}"
    if not out.exists():
        prepare(samples_dir("colin27"), out, PrepareOptions(split=(0.0, 0.0, 1.0), size=size), progress=False)
    test = load_prepared(out).arrays["test"]
    idx = np.linspace(len(test) * 0.35, len(test) * 0.65, slices).astype(int)
    truth = torch.from_numpy(np.asarray(test[idx], dtype=np.float32))[:, None]
    deg = SuperResolution(4.0)
    return truth, deg.model_condition(deg.upsample(deg.downsample(truth), (size, size)), torch.ones_like(truth))


def diffusers_dpm(denoiser, cond, steps: int, seed: int):
    """diffusers' DPMSolverMultistepScheduler driving meddiff's network (residual x0-prediction)."""
    import torch
    from diffusers import DPMSolverMultistepScheduler

    d = denoiser
    sched = DPMSolverMultistepScheduler(num_train_timesteps=d.sched.timesteps, beta_start=float(d.sched.betas[0]),
                                        beta_end=float(d.sched.betas[-1]), beta_schedule="linear",
                                        prediction_type="sample", algorithm_type="dpmsolver++", solver_order=2)
    sched.set_timesteps(steps)
    outs = []
    for i in range(cond.shape[0]):
        c = cond[i:i + 1]
        x = torch.randn((1, 1, *c.shape[2:]), generator=torch.Generator().manual_seed(seed + i))
        for t in sched.timesteps:
            with torch.no_grad():
                r0 = d.net(torch.cat([x, c], 1), t.reshape(1))
            x = sched.step(r0, t, x).prev_sample
        sched.set_timesteps(steps)  # reset the multistep history for the next image
        outs.append((x + d.base(c)).clamp(-1, 1))
    return torch.cat(outs)[None]


def run_mode(mode: str, slices: int, size: int, threads: int, workdir: Path) -> dict:
    import numpy as np
    import torch

    from meddiff.commands.demo import SAMPLED_CHECKPOINT
    from meddiff.samplers.run import restore
    from meddiff.samplers.memory import peak_rss_bytes
    from meddiff.metrics.image import gradient_ratio, psnr, ssim
    from meddiff.metrics.lpips import lpips_distance
    from meddiff.diffusion.checkpoint import load_model

    from meddiff.checkpointing.named import resolve_checkpoint

    torch.set_num_threads(threads)
    name = OTHER_CHECKPOINTS[mode][0] if mode in OTHER_CHECKPOINTS else None
    cfg, _, den = load_model(resolve_checkpoint(name) if name else SAMPLED_CHECKPOINT)
    truth, cond = colin_cond(slices, size, workdir)
    start = time.perf_counter()
    sampler, steps = cfg.sampler.name, 20 if mode.endswith("_20") else cfg.sampler.steps
    if mode == "diffusers_dpm20":
        out, steps = diffusers_dpm(den, cond, 20, 0), 20
    elif mode in OTHER_CHECKPOINTS:
        _, sampler, steps = OTHER_CHECKPOINTS[mode]
        den.precision = "auto"
        out = restore(den, cond, sampler=sampler, steps=steps, grid="logsnr", progress=False, batch_size=slices)
    else:
        den.precision = {"meddiff_fp32": "fp32", "meddiff_linspace20": "fp32"}.get(mode, "auto" if "auto" in mode
                                                                                    or "posterior" in mode else "bf16")
        tiles = dict(tile_size=128, tile_overlap=32) if mode == "meddiff_tiled" else {}
        if mode == "meddiff_linspace20":
            steps = 20
            den = on_timesteps(den, linspace_timesteps(den.sched.timesteps, steps))
        if mode == "meddiff_posterior_mean":
            sampler, steps = "posterior_mean", 1
        out = restore(den, cond, sampler=sampler, steps=steps, grid="logsnr",
                      progress=False, batch_size=slices, **tiles)
    sec = (time.perf_counter() - start) / slices
    return {"mode": mode, "calls": steps, "s_per_slice": sec, "peak_rss": peak_rss_bytes(),
            "psnr": float(np.mean(psnr(out[0], truth, 2.0))), "ssim": float(np.mean(ssim(out[0], truth, 2.0))),
            "lpips": float(torch.as_tensor(lpips_distance(out[0], truth)).float().mean()),
            "grad": float(np.mean(gradient_ratio(out[0], truth)))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=2)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--rounds", type=int, default=1, help="run the mode list this many times in turn; medians reported")
    ap.add_argument("--workdir", type=Path, default=Path("runs/restore_speed"))
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(run_mode(a.child, a.slices, a.size, a.threads, a.workdir)))
        return
    a.workdir.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict]] = {}
    for _ in range(a.rounds):
        for mode in a.modes.split(","):
            cmd = [sys.executable, __file__, "--child", mode, "--slices", str(a.slices), "--size", str(a.size),
                   "--threads", str(a.threads), "--workdir", str(a.workdir)]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode:
                print(f"{mode}: failed\n{res.stderr[-2000:]}", file=sys.stderr)
                continue
            runs.setdefault(mode, []).append(json.loads(res.stdout.strip().splitlines()[-1]))
    rows = []
    for mode, got in runs.items():
        times = sorted(r["s_per_slice"] for r in got)
        rows.append({**got[0], "s_per_slice": times[len(times) // 2]})
    first = rows[0]["mode"] if rows else "-"
    base = rows[0]["s_per_slice"] if rows else None  # speed-ups against the first mode of --modes
    print(f"\n{a.slices} Colin27 slices, {a.size}x{a.size} (x4 from {a.size // 4}), {a.threads} thread(s)\n")
    print(f"| mode | calls | s per slice | s per 180-slice volume | speed-up vs {first} | peak RSS GB | PSNR dB | SSIM "
          "| LPIPS | gradient ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        up = f"{base / r['s_per_slice']:.2f}x" if base else "-"
        print(f"| {r['mode']} | {r['calls']} | {r['s_per_slice']:.2f} | {180 * r['s_per_slice']:.0f} | {up} | "
              f"{r['peak_rss'] / 1e9:.2f} | {r['psnr']:.2f} | {r['ssim']:.4f} | {r['lpips']:.4f} | {r['grad']:.3f} |")


if __name__ == "__main__":
    main()
