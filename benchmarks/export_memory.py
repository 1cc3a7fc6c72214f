"""Peak memory and time of one denoiser call at clinical sizes: eager PyTorch against the ONNX
export run by onnxruntime, each mode in a fresh subprocess (its peak resident set is its own).

Modes:
  eager         meddiff's U-Net in PyTorch (the checkpoint as `meddiff sample` loads it), fp32, no_grad
  onnx          `meddiff export --format onnx` (default: attention as onnxruntime's fused
                com.microsoft MultiHeadAttention node), CPUExecutionProvider
  onnx_standard `--onnx-attention standard` (plain MatMul/Softmax attention, any runtime)
  onnx_tiled    a whole sampling run of one image through the ONNX export with meddiff's sampler
                (the checkpoint's stored sampler) in windows planned as `meddiff sample` plans them
                (--tile-size, default: planned under --max-memory), output size = the size

Input: one random [1, C_in, S, S] (x_t and the condition planes), timestep 500; sizes S given
by --sizes. Reported: peak resident set (VmHWM) of the subprocess, its growth over the resident
set before the call (model loaded), seconds of the call (or the run), and the ratio of each
mode's peak to eager's at the same size. Peaks include Python, PyTorch and the model (~0.3-0.5 GB).

Usage::

    python benchmarks/export_memory.py                          # sr_x4_general, 512 and 1024, all modes
    python benchmarks/export_memory.py --sizes 512 --modes eager,onnx --rounds 2   # alternating A B A B
    python benchmarks/export_memory.py --modes onnx_standard --sizes 512   # the old graph (9 GB)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = ("eager", "onnx", "onnx_standard", "onnx_tiled")


def child(mode: str, size: int, checkpoint: str, onnx_dir: Path, threads: int, tile: int | None) -> dict:
    import torch

    torch.set_num_threads(threads)
    from meddiff.samplers.memory import current_rss_bytes, peak_rss_bytes
    from meddiff.diffusion.checkpoint import load_pretrained

    cfg, den = load_pretrained(checkpoint)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, den.net.in_channels, size, size, generator=g)
    k = torch.full((1,), 500, dtype=torch.long)
    if mode == "eager":
        net = den.net
        run = lambda: net(x, k)  # noqa: E731
    elif mode in ("onnx", "onnx_standard"):
        from meddiff.export import load_exported

        net = load_exported(onnx_dir / f"{mode}.onnx")
        run = lambda: net(x, k)  # noqa: E731
    else:
        from meddiff.export import exported_denoiser
        from meddiff.samplers.run import restore, sampler_options

        cfg, ex = exported_denoiser(onnx_dir / "onnx.onnx")
        cond = torch.rand(1, den.net.in_channels - 1, size, size, generator=g) * 2 - 1
        s = cfg.sampler
        opts = sampler_options(s.name, cfg.diffusion.variance, s.eta, s.grid)
        run = lambda: restore(ex, cond, sampler=s.name, steps=s.steps, progress=False, tile_size=tile, **opts)  # noqa: E731
    del den
    before = current_rss_bytes()
    t = time.perf_counter()
    with torch.no_grad():
        y = run()
    seconds = time.perf_counter() - t
    return {"mode": mode, "size": size, "peak": peak_rss_bytes(), "before": before, "seconds": seconds,
            "out_shape": list(y.shape), "finite": bool(torch.isfinite(y).all())}


def export_all(checkpoint: str, onnx_dir: Path, modes: list[str]) -> None:
    from meddiff.export import export_denoiser

    if {"onnx", "onnx_tiled"} & set(modes):
        export_denoiser(checkpoint, onnx_dir / "onnx.onnx", "onnx", onnx_attention="fused")
    if "onnx_standard" in modes:
        export_denoiser(checkpoint, onnx_dir / "onnx_standard.onnx", "onnx", onnx_attention="standard")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="sr_x4_general")
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    ap.add_argument("--modes", default="eager,onnx,onnx_tiled")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--tile-size", type=int, default=None, help="onnx_tiled: window size (default: planned)")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--child", nargs=3, metavar=("MODE", "SIZE", "DIR"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        mode, size, d = a.child
        print(json.dumps(child(mode, int(size), a.checkpoint, Path(d), a.threads, a.tile_size)))
        return
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    for m in modes:
        if m not in MODES:
            ap.error(f"unknown mode {m!r}; expected some of {', '.join(MODES)}")
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    rows = []
    with tempfile.TemporaryDirectory() as d:
        export_all(a.checkpoint, Path(d), modes)
        for r in range(a.rounds):
            for size in a.sizes:
                for m in modes:
                    cmd = [sys.executable, __file__, "--checkpoint", a.checkpoint, "--threads", str(a.threads),
                           "--child", m, str(size), d] + (["--tile-size", str(a.tile_size)] if a.tile_size else [])
                    try:
                        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=a.timeout)
                    except subprocess.TimeoutExpired:
                        rows.append({"mode": m, "size": size, "error": f"timeout {a.timeout:g} s"})
                        continue
                    if p.returncode:
                        last = (p.stderr.strip().splitlines() or ["?"])[-1]
                        rows.append({"mode": m, "size": size, "error": f"exit {p.returncode}: {last[:120]}"})
                    else:
                        rows.append(json.loads(p.stdout.strip().splitlines()[-1]))
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(f"\n{a.checkpoint}, {a.threads} thread(s), {a.rounds} round(s) (A B A B ...)\n")
    print("| size | mode | peak RSS GB | growth in call GB | s | peak / eager | output |")
    print("|---|---|---|---|---|---|---|")
    eager = {}
    for row in rows:
        if row.get("mode") == "eager" and "peak" in row:
            eager.setdefault(row["size"], []).append(row["peak"])
    for row in sorted(rows, key=lambda r: (r["size"], MODES.index(r["mode"]))):
        if "error" in row:
            print(f"| {row['size']} | {row['mode']} | - | - | - | - | {row['error']} |")
            continue
        ref = eager.get(row["size"])
        ratio = f"{row['peak'] / (sum(ref) / len(ref)):.2f}" if ref else "-"
        print(f"| {row['size']} | {row['mode']} | {row['peak'] / 1e9:.2f} | {(row['peak'] - row['before']) / 1e9:.2f} | "
              f"{row['seconds']:.1f} | {ratio} | {'x'.join(map(str, row['out_shape']))}{'' if row['finite'] else ' NaN'} |")


if __name__ == "__main__":
    main()
