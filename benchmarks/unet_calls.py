"""ms per network call, meddiff's U-Net against diffusers' UNet2DModel, at 64x64 and 256x256, for
the peer configuration (15.7 M parameters) and the shipped models' configuration (demo_sr_x4 and
sr_x4_general: widths 32/64/128, one residual block per level, attention at the lowest level and
in the middle, GroupNorm 16, 4 heads: 2,735,233 parameters in meddiff), fp32 and bf16.

Modes, alternating after a warm-up call of each, under torch.no_grad, random weights (speed does
not depend on the values):
  meddiff fp32             the default fast path (channels-last, phase upsample, in-place ops)
  diffusers fp32 CL        diffusers given channels-last input (faster than its NCHW default)
  meddiff bf16 autocast    torch.autocast: weights re-cast to bf16 at every call
  meddiff bf16 cast        what sampling runs in bf16: a bf16 copy of the network made once
                           (meddiff.diffusion.denoiser.cast_network), bf16 input
  meddiff bf16 frozen      the bf16 copy traced, frozen and optimised for inference
                           (torch.jit.trace + freeze + optimize_for_inference; with --frozen)
  diffusers bf16 autocast CL / diffusers bf16 cast CL   the peer given the same two tricks
Reported: median (min-max) ms per call and the ratio (fastest diffusers mode of the same
precision) / this (> 1: faster than the best peer mode).

Usage (also ``python benchmarks/unet_speed.py --calls``)::

    python benchmarks/unet_calls.py --repeats 3 --threads 1 --frozen
    python benchmarks/unet_calls.py --cases shipped-256
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from torch import nn

from meddiff.diffusion.denoiser import autocast, cast_network
from meddiff.nn.unet import UNet

CONFIGS = {
    "peer": dict(channels=(64, 128, 256), num_res_blocks=2, norm_groups=32, num_heads=4),
    "shipped": dict(channels=(32, 64, 128), num_res_blocks=1, norm_groups=16, num_heads=4),
}
CASES = {"peer-64": ("peer", 64, 16), "peer-256": ("peer", 256, 2), "shipped-64": ("shipped", 64, 16),
         "shipped-256": ("shipped", 256, 8)}


def build_meddiff(cfg: dict) -> nn.Module:
    return UNet(2, 1, attention_levels=(False, False, True), **cfg)


class Diffusers(nn.Module):
    """UNet2DModel with meddiff's layout: attention at the lowest level and in the middle block."""

    def __init__(self, cfg: dict):
        super().__init__()
        from diffusers import UNet2DModel

        ch = cfg["channels"]
        self.net = UNet2DModel(in_channels=2, out_channels=1, layers_per_block=cfg["num_res_blocks"], block_out_channels=ch,
                               down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                               up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
                               norm_num_groups=cfg["norm_groups"], attention_head_dim=ch[-1] // cfg["num_heads"])

    def forward(self, x, t):
        return self.net(x, t).sample


def frozen(model: nn.Module, x: torch.Tensor, t: torch.Tensor) -> nn.Module:
    """model traced on (x, t), frozen and optimised for inference (TorchScript)."""
    with torch.no_grad():
        return torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(model, (x, t), check_trace=False)))


def modes_for(models: dict[str, nn.Module], x: torch.Tensor, t: torch.Tensor, freeze: bool) -> dict:
    """label -> (precision, autocast precision, call)."""
    med, dif = models["meddiff"], models["diffusers"]
    med16, dif16 = cast_network(med, torch.bfloat16), cast_network(dif, torch.bfloat16)
    cl = x.contiguous(memory_format=torch.channels_last)
    x16, cl16 = x.bfloat16(), cl.bfloat16()
    modes = {"meddiff fp32": ("fp32", "fp32", lambda: med(x, t)),
             "diffusers fp32 CL": ("fp32", "fp32", lambda: dif(cl, t)),
             "meddiff bf16 autocast": ("bf16", "bf16", lambda: med(x, t)),
             "meddiff bf16 cast": ("bf16", "fp32", lambda: med16(x16, t))}
    if freeze:
        fz = frozen(med16, x16, t)
        modes["meddiff bf16 frozen"] = ("bf16", "fp32", lambda: fz(x16, t))
    modes["diffusers bf16 autocast CL"] = ("bf16", "bf16", lambda: dif(cl, t))
    modes["diffusers bf16 cast CL"] = ("bf16", "fp32", lambda: dif16(cl16, t))
    return modes


@torch.no_grad()
def time_call(call, precision: str) -> float:
    t0 = time.perf_counter()
    with autocast(torch.device("cpu"), precision):
        call().float()
    return time.perf_counter() - t0


def run_case(name: str, repeats: int, freeze: bool) -> list[str]:
    cfg_name, size, batch = CASES[name]
    cfg = CONFIGS[cfg_name]
    torch.manual_seed(0)
    models = {"meddiff": build_meddiff(cfg).eval(), "diffusers": Diffusers(cfg).eval()}
    params = {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}
    x, t = torch.randn(batch, 2, size, size), torch.randint(0, 1000, (batch,))
    modes = modes_for(models, x, t, freeze)
    times: dict[str, list[float]] = {m: [] for m in modes}
    for rnd in range(repeats + 1):
        for label, (_, amp, call) in modes.items():
            s = time_call(call, amp)
            if rnd:
                times[label].append(s * 1e3)
    rows = []
    for label, (prec, _, _) in modes.items():
        v = times[label]
        peer = min(statistics.median(times[m]) for m, (p, _, _) in modes.items() if m.startswith("diffusers") and p == prec)
        rows.append(f"| {name} | {params[label.split()[0]]:,} | {label} | batch {batch} | {statistics.median(v):.0f} "
                    f"({min(v):.0f}-{max(v):.0f}) | {peer / statistics.median(v):.2f}x |")
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--frozen", action="store_true", help="add meddiff bf16 under torch.jit freeze")
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), median (min-max) of {args.repeats} alternating rounds\n")
    print("| case | params | mode | batch | ms per call | best diffusers / this |")
    print("|---|---|---|---|---|---|")
    for name in args.cases.split(","):
        for row in run_case(name.strip(), args.repeats, args.frozen):
            print(row, flush=True)


if __name__ == "__main__":
    main()
