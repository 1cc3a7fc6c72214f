"""meddiff's U-Net against MONAI's DiffusionModelUNet and diffusers' UNet2DModel, side by side.

Same configuration for all three: 2 input planes (x_t + condition), 1 output, widths
64/128/256, 2 residual blocks per level (3 in the decoder), attention at the lowest level and in
the middle block, GroupNorm 32, 4 heads of 64 channels: 15,723,201 parameters each.

Measured, alternating the modes A B C A B C after a warm-up round of every mode:
  * training images/s at 64x64, batch 8: forward + backward + AdamW step, MSE loss;
  * ms per network call at 64x64, batch 16 under torch.no_grad (the cost of one sampler step);
  * peak memory while training: peak resident set (VmHWM in /proc/self/status; ru_maxrss
    would inherit this process's peak across fork + exec) of a fresh subprocess per mode that
    builds the model and runs 2 training steps (reported: the peak, and its growth over the steps);
  * the effect of bf16 autocast on outputs: relative L2 error of one call against fp32, fixed
    seed, batch 2 at 32x32, every layer at PyTorch's default init (zero-initialised output
    layers re-drawn so the output is not identically zero).

bf16 speed modes are skipped (and the reason printed) when this CPU has no bf16 kernels (a
bf16 matmul probe runs below half the fp32 rate): there, autocast falls back to reference code
that is 100x slower. The bf16 error is still measured.

Peers are benchmark-only dependencies: ``pip install monai diffusers einops`` (the ``bench``
extra). Usage::

    python benchmarks/unet_speed.py                 # full run (~10 min on 2 busy cores)
    python benchmarks/unet_speed.py --quick         # 1 repeat, no memory subprocesses
    python benchmarks/unet_speed.py --only meddiff,diffusers --repeats 5 --threads 2
    python benchmarks/unet_speed.py --calls         # per call at 64x64 and 256x256, peer and shipped
                                                    # configs, against diffusers (benchmarks/unet_calls.py)
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from meddiff.diffusion.denoiser import autocast
from meddiff.nn.unet import UNet

PEER_CONFIG = dict(channels=(64, 128, 256), num_res_blocks=2, attention_levels=(False, False, True), norm_groups=32)
EXPECTED_PARAMS = 15_723_201
TRAIN_BATCH, CALL_BATCH, SIZE = 8, 16, 64
CL = torch.channels_last


# ----------------------------------------------------------------------------- models


def build_meddiff(fast_path: bool = True) -> nn.Module:
    return UNet(2, 1, num_heads=4, fast_path=fast_path, **PEER_CONFIG)


def build_monai(flash: bool = False) -> nn.Module:
    from monai.networks.nets import DiffusionModelUNet

    kw = dict(use_flash_attention=True) if flash else {}
    return DiffusionModelUNet(spatial_dims=2, in_channels=2, out_channels=1, num_res_blocks=2, channels=(64, 128, 256),
                              attention_levels=(False, False, True), norm_num_groups=32, num_head_channels=64, **kw)


class DiffusersAdapter(nn.Module):
    """UNet2DModel returning a plain tensor (its forward returns an output dataclass)."""

    def __init__(self):
        super().__init__()
        from diffusers import UNet2DModel

        self.net = UNet2DModel(sample_size=SIZE, in_channels=2, out_channels=1, layers_per_block=2,
                               block_out_channels=(64, 128, 256), down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                               up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), norm_num_groups=32, attention_head_dim=64)

    def forward(self, x, t):
        return self.net(x, t).sample


def monai_has_flash() -> bool:
    import inspect

    from monai.networks.nets import DiffusionModelUNet

    return "use_flash_attention" in inspect.signature(DiffusionModelUNet.__init__).parameters


@dataclass(frozen=True)
class Mode:
    name: str
    family: str  # "meddiff" | "peer"
    build: Callable[[], nn.Module]
    precision: str = "fp32"  # "fp32" | "bf16" (autocast)
    channels_last: bool = False  # input (and model) in channels-last memory
    compile: bool = False


def all_modes(with_compile: bool) -> list[Mode]:
    modes = [
        Mode("meddiff fp32 plain", "meddiff", lambda: build_meddiff(False)),
        Mode("meddiff fp32 fast (default)", "meddiff", build_meddiff),
        Mode("meddiff bf16 fast", "meddiff", build_meddiff, precision="bf16"),
    ]
    if with_compile:
        modes.append(Mode("meddiff fp32 fast torch.compile", "meddiff", build_meddiff, compile=True))
    modes.append(Mode("MONAI fp32", "peer", build_monai))
    try:
        if monai_has_flash():
            modes.append(Mode("MONAI fp32 flash_attention", "peer", lambda: build_monai(True)))
    except ImportError:
        pass
    modes += [
        Mode("diffusers fp32", "peer", DiffusersAdapter),
        Mode("diffusers fp32 channels_last", "peer", DiffusersAdapter, channels_last=True),
        Mode("diffusers bf16", "peer", DiffusersAdapter, precision="bf16"),
        Mode("diffusers bf16 channels_last", "peer", DiffusersAdapter, precision="bf16", channels_last=True),
    ]
    return modes


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ----------------------------------------------------------------------------- runners


class Runner:
    """One model in one mode, with its inputs, optimizer and timed operations."""

    def __init__(self, mode: Mode, seed: int = 0):
        torch.manual_seed(seed)
        self.mode = mode
        self.model = mode.build()
        if mode.channels_last:
            self.model = self.model.to(memory_format=CL)
        self.fn = torch.compile(self.model) if mode.compile else self.model
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        g = torch.Generator().manual_seed(seed)
        fmt = CL if mode.channels_last else torch.contiguous_format
        self.x_train = torch.randn(TRAIN_BATCH, 2, SIZE, SIZE, generator=g).contiguous(memory_format=fmt)
        self.y_train = torch.randn(TRAIN_BATCH, 1, SIZE, SIZE, generator=g)
        self.t_train = torch.randint(0, 1000, (TRAIN_BATCH,), generator=g)
        self.x_call = torch.randn(CALL_BATCH, 2, SIZE, SIZE, generator=g).contiguous(memory_format=fmt)
        self.t_call = torch.randint(0, 1000, (CALL_BATCH,), generator=g)
        self.device = torch.device("cpu")

    def step(self) -> float:
        """One training step; returns seconds."""
        self.model.train()
        t0 = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        with autocast(self.device, self.mode.precision):
            out = self.fn(self.x_train, self.t_train)
        loss = torch.nn.functional.mse_loss(out.float(), self.y_train)
        loss.backward()
        self.opt.step()
        return time.perf_counter() - t0

    @torch.no_grad()
    def call(self) -> float:
        """One network call at batch 16 without autograd; returns seconds."""
        self.model.eval()
        t0 = time.perf_counter()
        with autocast(self.device, self.mode.precision):
            out = self.fn(self.x_call, self.t_call)
        out.float()
        return time.perf_counter() - t0


def bf16_probe(n: int = 384) -> tuple[float, float]:
    """GFLOP/s of an n x n matmul in fp32 and bf16 (best of 3)."""
    rates = []
    for dt in (torch.float32, torch.bfloat16):
        a = torch.randn(n, n).to(dt)
        a @ a
        best = math.inf
        for _ in range(3):
            t0 = time.perf_counter()
            a @ a
            best = min(best, time.perf_counter() - t0)
        rates.append(2 * n ** 3 / best / 1e9)
    return rates[0], rates[1]


def reinit(model: nn.Module, seed: int = 0) -> nn.Module:
    """Every layer at PyTorch's default init (undoes zero-initialised output layers)."""
    torch.manual_seed(seed)
    for m in model.modules():
        if hasattr(m, "reset_parameters") and m is not model:
            m.reset_parameters()
    return model


@torch.no_grad()
def bf16_error(build: Callable[[], nn.Module]) -> float:
    """||f_bf16(x) - f_fp32(x)|| / ||f_fp32(x)||, one call, batch 2, 32x32, fixed seed."""
    model = reinit(build()).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 2, 32, 32, generator=g)
    t = torch.tensor([10, 700])
    ref = model(x, t).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(x, t).float()
    return float((low - ref).norm() / ref.norm())


# ----------------------------------------------------------------------------- memory subprocess


def peak_rss_mb() -> float:
    """High-water resident set of this process in MB: VmHWM of the current address space (Linux).

    ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` is the fallback; on Linux it keeps the parent's
    peak across fork + exec, so a child of this (multi-GB) benchmark would report the parent's.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_child(name: str, threads: int, with_compile: bool) -> None:
    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore")
    mode = next(m for m in all_modes(with_compile) if m.name == name)
    r = Runner(mode)
    before = peak_rss_mb()
    for _ in range(2):
        r.step()
    peak = peak_rss_mb()
    print(json.dumps({"peak_mb": peak, "growth_mb": peak - before}))


def measure_memory(mode: Mode, threads: int, with_compile: bool) -> dict:
    cmd = [sys.executable, __file__, "--_memory-child", mode.name, "--threads", str(threads)]
    if with_compile:
        cmd.append("--compile")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- report


def med_range(xs: list[float], fmt: str) -> str:
    if not xs:
        return "-"
    return f"{format(statistics.median(xs), fmt)} ({format(min(xs), fmt)}-{format(max(xs), fmt)})"


def ratio(value: float | None, ref: float | None) -> str:
    return f"{value / ref:.2f}x" if value and ref else "-"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds after the warm-up round (default 3)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 repeat, no memory subprocesses")
    ap.add_argument("--only", default="", help="comma-separated substrings; keep modes whose name contains one")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    ap.add_argument("--compile", action="store_true", help="also meddiff under torch.compile (compile time reported)")
    ap.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    ap.add_argument("--force-bf16", action="store_true", help="time bf16 modes even without bf16 kernels")
    ap.add_argument("--calls", action="store_true", help="per-call table at 64x64 and 256x256 instead (unet_calls.py)")
    ap.add_argument("--_memory-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.calls:
        sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
        from unet_calls import main as calls_main

        return calls_main(["--repeats", str(args.repeats), "--threads", str(args.threads)])
    if args._memory_child:
        return memory_child(args._memory_child, args.threads, args.compile)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    repeats = 1 if args.quick else args.repeats
    do_memory = not (args.quick or args.no_memory)

    modes = all_modes(args.compile)
    if args.only:
        keys = [k.strip().lower() for k in args.only.split(",") if k.strip()]
        modes = [m for m in modes if any(k in m.name.lower() for k in keys)]
    fp32_rate, bf16_rate = bf16_probe()
    print(f"torch {torch.__version__}, {args.threads} thread(s), CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print(f"matmul probe: fp32 {fp32_rate:.1f} GFLOP/s, bf16 {bf16_rate:.1f} GFLOP/s")
    if bf16_rate < 0.5 * fp32_rate and not args.force_bf16:
        skipped = [m.name for m in modes if m.precision == "bf16"]
        if skipped:
            print(f"bf16 speed modes skipped (no bf16 kernels on this CPU, bf16 matmul {fp32_rate / bf16_rate:.0f}x slower "
                  f"than fp32): {', '.join(skipped)}")
        modes = [m for m in modes if m.precision != "bf16"]

    runners: dict[str, Runner] = {}
    counts = {}
    for m in modes:
        runners[m.name] = Runner(m)
        counts[m.name] = n_params(runners[m.name].model)
    print("\nparameters:")
    for name, n in counts.items():
        diff = n - EXPECTED_PARAMS
        print(f"  {name:40s} {n:,}" + ("" if diff == 0 else f"  (DIFFERS from {EXPECTED_PARAMS:,} by {diff:+,})"))

    steps: dict[str, list[float]] = {m.name: [] for m in modes}
    calls: dict[str, list[float]] = {m.name: [] for m in modes}
    first: dict[str, tuple[float, float]] = {}
    print(f"\nwarm-up round, then {repeats} timed round(s), modes alternating ...", flush=True)
    for rnd in range(repeats + 1):
        for m in modes:
            r = runners[m.name]
            s, c = r.step(), r.call()
            if rnd == 0:
                first[m.name] = (s, c)
            else:
                steps[m.name].append(TRAIN_BATCH / s)
                calls[m.name].append(c * 1e3)
            print(f"  round {rnd} {m.name:40s} step {s:6.2f} s  call {c * 1e3:7.0f} ms", flush=True)
    for m in modes:
        runners[m.name] = None  # free before the memory subprocesses
    runners.clear()

    memory = {}
    if do_memory:
        print("\nmemory (fresh subprocess per mode, 2 training steps) ...", flush=True)
        for m in modes:
            memory[m.name] = measure_memory(m, args.threads, args.compile)

    def best_peer(values: dict[str, list[float]], precision: str, higher: bool) -> tuple[str | None, float | None]:
        cands = [(statistics.median(v), n) for n, v in values.items()
                 if v and next(m for m in modes if m.name == n).family == "peer"
                 and next(m for m in modes if m.name == n).precision == precision]
        if not cands:
            return None, None
        val, name = (max if higher else min)(cands)
        return name, val

    print(f"\n## U-Net speed, 64x64, {args.threads} thread(s), median (min-max) of {repeats} alternating round(s)\n")
    print("| mode | params | train img/s (batch 8) | vs best peer | ms per call (batch 16) | vs best peer | peak RSS training MB (growth) |")
    print("|---|---|---|---|---|---|---|")
    for m in modes:
        ps, rs = best_peer(steps, m.precision, True)
        pc, rc = best_peer(calls, m.precision, False)
        st, ca = steps[m.name], calls[m.name]
        speed_ratio = ratio(statistics.median(st), rs) if st else "-"
        call_ratio = ratio(rc, statistics.median(ca)) if ca else "-"
        mem = memory.get(m.name)
        mem_s = f"{mem['peak_mb']:.0f} ({mem['growth_mb']:+.0f})" if mem else "-"
        print(f"| {m.name} | {counts[m.name]:,} | {med_range(st, '.2f')} | {speed_ratio} | {med_range(ca, '.0f')} | {call_ratio} | {mem_s} |")
    for prec in ("fp32", "bf16"):
        ps, _ = best_peer(steps, prec, True)
        pc, _ = best_peer(calls, prec, False)
        if ps:
            print(f"\nbest {prec} peer: training {ps}; calls {pc} (ratios > 1 mean faster than it)")
    if any(m.compile for m in modes):
        for m in modes:
            if m.compile:
                s, c = first[m.name]
                print(f"{m.name}: first training step {s:.0f} s, first call {c:.0f} s (compilation included)")
    print(f"peak memory: VmHWM (peak resident set, /proc/self/status) of a fresh process that imports torch, builds the "
          f"model and AdamW and runs 2 training steps; growth = peak after the steps minus peak before them")

    print("\n## bf16 autocast effect on one call (relative L2 error vs fp32, batch 2, 32x32, default init)\n")
    names = {m.family if m.family == "meddiff" else m.name.split()[0]: m for m in modes}
    for label, build in (("meddiff", build_meddiff), ("diffusers", DiffusersAdapter)):
        if args.only and not any(label.lower() in k for k in args.only.lower().split(",")) and label not in names:
            continue
        t0 = time.perf_counter()
        err = bf16_error(build)
        print(f"- {label}: {err:.2e}  ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
