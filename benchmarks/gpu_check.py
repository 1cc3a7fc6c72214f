"""One command for a machine with a GPU: checks and timings in one table (also runs on a CPU, skipping
what needs CUDA).

    python benchmarks/gpu_check.py                  # < 5 min on one GPU (torch.compile is most of it)
    python benchmarks/gpu_check.py --device cpu     # the same rows on the CPU (compile skipped: --compile)
    python benchmarks/gpu_check.py --tiny           # tiny sizes (the CPU test, tests/test_gpu_check.py)

Rows:
  cuda      checks on the GPU (the test suite itself runs on the CPU): the one-call student on CUDA
            agrees with the CPU (max |diff|, [-1, 1] units); a fixed-seed DPM-Solver++ run repeats
            exactly; bf16 against fp32 (PSNR); skipped without CUDA
  unet      ms per call of the shipped U-Net (sr_x4_general's network and weights) at --batch x 2 x
            --size^2, fp32 / bf16 autocast, eager / torch.compile (inductor; CUDA, or --compile), and
            diffusers' UNet2DModel built at the same configuration (widths, blocks, attention at the
            lowest level, GroupNorm, heads; equal parameter counts shown), eager, when diffusers is installed
  memory    peak memory of `meddiff.restore` with the one-call student: a --ct x --ct CT slice (x4
            from --ct/4) and a --volume (X,Y,Z) volume (x4 in-plane from X/4 x Y/4, Z slices); CUDA:
            torch.cuda.max_memory_allocated, CPU: the peak resident set of a fresh subprocess
  train     training images/s of the shipped U-Net (forward + backward + AdamW) at --train-batch x
            --train-size^2 crops, fp32 (and bf16 on CUDA)
  student   slices/s of the shipped one-call student (sr_x4_general_1step) at --size x --size from
            --size/4, --slices slices in batches of --batch

Timings: median of --repeats calls after one warm-up (CUDA synchronised).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROWS: list[tuple[str, str, str, str]] = []


def row(section: str, what: str, result: str, note: str = "") -> None:
    ROWS.append((section, what, result, note))
    print(f"  {section:8} {what:44} {result:>16}  {note}", flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn, device: torch.device, repeats: int) -> float:
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def shipped(name: str, device: torch.device, precision: str = "fp32"):
    from meddiff.diffusion.checkpoint import load_model
    from meddiff.checkpointing.named import resolve_checkpoint

    return load_model(resolve_checkpoint(name), device=device, precision=precision)


def student_restore(device: torch.device, n: int, size: int, batch: int, precision: str = "fp32", seed: int = 0):
    """The one-call student over n condition planes of size x size (the upsampled low-resolution
    slices, i.e. the output grid) in batches of `batch`."""
    from meddiff.samplers.run import restore

    cfg, _, denoiser = shipped("sr_x4_general_1step", device, precision)
    cond = torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1
    return lambda: restore(denoiser, cond, sampler="student", steps=1, seed=seed, batch_size=batch, device=device,
                           progress=False)


# ----------------------------------------------------------------------------- sections


def cuda_checks(device: torch.device, a) -> None:
    if device.type != "cuda":
        for what in ("student CUDA vs CPU", "fixed seed repeats", "bf16 vs fp32"):
            row("cuda", what, "skipped", "no CUDA")
        return
    from meddiff.samplers.run import restore

    n, s = 4, a.size
    gpu = student_restore(device, n, s, a.batch)()
    cpu = student_restore(torch.device("cpu"), n, s, a.batch)()
    diff = float((gpu - cpu).abs().max())
    row("cuda", f"student CUDA vs CPU, {n} x {s}^2", f"{diff:.2e}", "max |diff|, pass" if diff < 1e-2 else "FAIL (> 1e-2)")
    cfg, _, denoiser = shipped("sr_x4_general", device)
    cond = torch.rand(2, 1, s, s, generator=torch.Generator().manual_seed(2)) * 2 - 1
    runs = [restore(denoiser, cond, sampler="dpm_solver_pp", steps=5, seed=3, device=device, progress=False, grid="logsnr")
            for _ in range(2)]
    rep = float((runs[0] - runs[1]).abs().max())
    row("cuda", "fixed seed repeats (DPM-Solver++ 5 steps)", f"{rep:.2e}", "pass" if rep < 1e-5 else "FAIL (> 1e-5)")
    bf = student_restore(device, n, s, a.batch, "bf16")()
    mse = float(((bf - gpu) ** 2).mean())
    psnr = 10 * math.log10(4 / max(mse, 1e-20))
    row("cuda", "bf16 vs fp32 (student)", f"{psnr:.1f} dB", "PSNR on [-1, 1], pass" if psnr > 35 else "FAIL (< 35 dB)")


class DiffusersSame(torch.nn.Module):
    """diffusers' UNet2DModel at the shipped configuration (attention at the lowest level and the middle)."""

    def __init__(self, m, in_ch: int):
        super().__init__()
        from diffusers import UNet2DModel

        levels = len(m.channels)
        down = tuple("AttnDownBlock2D" if m.attention_levels[i] else "DownBlock2D" for i in range(levels))
        self.net = UNet2DModel(in_channels=in_ch, out_channels=1, layers_per_block=m.num_res_blocks,
                               block_out_channels=tuple(m.channels), down_block_types=down,
                               up_block_types=tuple(b.replace("Down", "Up") for b in reversed(down)),
                               norm_num_groups=m.norm_groups, attention_head_dim=m.channels[-1] // m.num_heads)

    def forward(self, x, t):
        return self.net(x, t).sample


def unet_calls(device: torch.device, a) -> None:
    from meddiff.diffusion.denoiser import autocast

    cfg, net, _ = shipped("sr_x4_general", device)
    x = torch.randn(a.batch, 2, a.size, a.size, device=device)
    t = torch.full((a.batch,), 500, device=device)
    models = {"meddiff": net}
    try:
        models["diffusers"] = DiffusersSame(cfg.model, 2).to(device).eval()
    except ImportError:
        row("unet", "diffusers UNet2DModel", "skipped", "diffusers not installed")
    from meddiff.diffusion.denoiser import resolve_precision

    compile_ok = device.type == "cuda" or a.compile
    native_bf16 = resolve_precision("auto", device) == "bf16"
    for name, model in models.items():
        params = sum(p.numel() for p in model.parameters())
        for precision in ("fp32", "bf16"):
            if precision == "bf16" and not native_bf16:
                row("unet", f"{name} bf16, {a.batch} x {a.size}^2", "skipped", "no native bf16 here (autocast is slow reference code)")
                continue
            for compiled in (False, True) if name == "meddiff" else (False,):  # the peer eager (2 compiles fit 5 min)
                what = f"{name} {precision}{' compile' if compiled else ''}, {a.batch} x {a.size}^2"
                if compiled and not compile_ok:
                    row("unet", what, "skipped", "CPU: pass --compile (compiles for minutes here)")
                    continue
                fn_net = torch.compile(model, dynamic=False) if compiled else model

                @torch.no_grad()
                def call(fn_net=fn_net, precision=precision):
                    with autocast(device, precision):
                        fn_net(x, t)

                try:
                    sec = median_seconds(call, device, a.repeats)
                    row("unet", what, f"{sec * 1e3:.1f} ms", f"{params:,} parameters")
                except Exception as e:  # noqa: BLE001 - a mode this device cannot run is a row, not a crash
                    row("unet", what, "failed", f"{type(e).__name__}: {str(e).splitlines()[0][:60]}")


def memory_job(kind: str, a, device: torch.device) -> float:
    """Peak bytes of restoring one synthetic input through meddiff.restore (this process)."""
    import nibabel as nib

    from meddiff.samplers.memory import peak_rss_bytes
    from meddiff.checkpointing.named import resolve_checkpoint
    from meddiff.restore import Request, restore

    if kind == "ct":
        shape = (a.ct // 4, a.ct // 4, 1)
    else:
        x, y, z = a.volume
        shape = (x // 4, y // 4, z)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.nii.gz"
        rng = np.random.default_rng(0)
        nib.save(nib.Nifti1Image(rng.normal(0, 300, shape).astype(np.float32), np.diag([1.2, 1.2, 2.0, 1.0])), path)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        restore(Request(output=Path(tmp) / "out", input=path, checkpoint=str(resolve_checkpoint("sr_x4_general_1step")),
                        progress=False, axis=2, batch_size=a.batch), device)
        return float(torch.cuda.max_memory_allocated(device) if device.type == "cuda" else peak_rss_bytes())


def memory(device: torch.device, a) -> None:
    from meddiff.samplers.memory import format_bytes

    x, y, z = a.volume
    for kind, what in (("ct", f"CT {a.ct}x{a.ct} (x4 from {a.ct // 4}^2)"), ("volume", f"volume {x}x{y}x{z} (x4 in-plane)")):
        if a.in_process or device.type == "cuda":
            peak = memory_job(kind, a, device)
        else:
            cmd = [sys.executable, __file__, "--memory-job", kind, "--device", str(device), "--ct", str(a.ct),
                   "--volume", ",".join(map(str, a.volume)), "--batch", str(a.batch)]
            done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            if done.returncode:
                row("memory", what, "failed", done.stderr.strip().splitlines()[-1][:80] if done.stderr.strip() else "")
                continue
            peak = json.loads(done.stdout.strip().splitlines()[-1])["peak"]
        where = "CUDA max allocated" if device.type == "cuda" else ("peak RSS (this process)" if a.in_process else "peak RSS, own process")
        row("memory", what, format_bytes(peak), where)


def training(device: torch.device, a) -> None:
    from meddiff.diffusion.denoiser import autocast
    from meddiff.nn.unet import build_unet

    cfg, _, _ = shipped("sr_x4_general", device)
    torch.manual_seed(0)
    net = build_unet(cfg.model, 2, 1).to(device).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(a.train_batch, 2, a.train_size, a.train_size, generator=g).to(device)
    y = torch.randn(a.train_batch, 1, a.train_size, a.train_size, generator=g).to(device)
    t = torch.randint(0, 1000, (a.train_batch,), generator=g).to(device)
    for precision in ("fp32", "bf16") if device.type == "cuda" else ("fp32",):
        def step(precision=precision):
            opt.zero_grad(set_to_none=True)
            with autocast(device, precision):
                out = net(x, t)
            torch.nn.functional.mse_loss(out.float(), y).backward()
            opt.step()

        sec = median_seconds(step, device, a.repeats)
        row("train", f"shipped U-Net {precision}, batch {a.train_batch} x {a.train_size}^2", f"{a.train_batch / sec:.1f} img/s",
            "forward + backward + AdamW")


def student(device: torch.device, a) -> None:
    fn = student_restore(device, a.slices, a.size, a.batch, "auto")  # planes on the output grid (upsampled input)
    sec = median_seconds(fn, device, max(1, a.repeats // 2))
    row("student", f"one-call student, {a.slices} slices {a.size}^2 from {a.size // 4}^2", f"{a.slices / sec:.1f} slices/s",
        f"batch {a.batch}, precision auto")


def main(argv: list[str] | None = None) -> list[tuple[str, str, str, str]]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--size", type=int, default=256, help="U-Net call and student output size")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--ct", type=int, default=512)
    ap.add_argument("--volume", default="256,256,64", help="X,Y,Z of the volume (output grid)")
    ap.add_argument("--train-size", type=int, default=64)
    ap.add_argument("--train-batch", type=int, default=16)
    ap.add_argument("--slices", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--compile", action="store_true", help="torch.compile on the CPU too")
    ap.add_argument("--in-process", action="store_true", help="memory rows in this process (no subprocess)")
    ap.add_argument("--only", default="cuda,unet,memory,train,student")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes, 1 repeat, memory in-process (the CPU test)")
    ap.add_argument("--memory-job", choices=["ct", "volume"], help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.tiny:
        a.size, a.batch, a.ct, a.volume, a.train_size, a.train_batch, a.slices, a.repeats = 32, 2, 32, "32,32,2", 16, 2, 2, 1
        a.in_process = True
    a.volume = tuple(int(v) for v in a.volume.split(","))
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    from meddiff.config.device import pick_device

    device = pick_device(a.device)
    if a.memory_job:
        print(json.dumps({"peak": memory_job(a.memory_job, a, device)}))
        return []
    ROWS.clear()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} thread(s)"
    print(f"meddiff gpu_check on {device} ({name}), torch {torch.__version__}")
    t0 = time.perf_counter()
    sections = {"cuda": cuda_checks, "unet": unet_calls, "memory": memory, "train": training, "student": student}
    for key in a.only.split(","):
        sections[key](device, a)
    print(f"\n| section | what | result | note |\n|---|---|---|---|")
    for r in ROWS:
        print("| " + " | ".join(r) + " |")
    print(f"\n{time.perf_counter() - t0:.0f} s in all")
    return list(ROWS)


if __name__ == "__main__":
    main()
