"""ms per network call, meddiff's U-Net against diffusers' UNet2DModel, at 64x64 and 256x256, for
the peer configuration (15.7 M parameters) and the shipped demo model's configuration
(widths 32/64/128, one residual block per level, attention at the lowest level and in the
middle, GroupNorm 16, 4 heads: 2,735,233 parameters in meddiff), fp32 and bf16 autocast.

Every case runs its modes alternating (meddiff fp32, diffusers fp32, meddiff bf16, diffusers bf16,
...) after a warm-up call of each, under torch.no_grad, random weights at PyTorch's default init
(speed does not depend on the values). Reported: median (min-max) ms per call and the ratio
diffusers / meddiff at equal precision (> 1: meddiff is faster).

Usage (also ``python benchmarks/unet_speed.py --calls``)::

    python benchmarks/unet_calls.py --repeats 3 --threads 1
    python benchmarks/unet_calls.py --cases shipped-256
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from torch import nn

from meddiff.diffusion.denoiser import autocast
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


@torch.no_grad()
def time_call(model: nn.Module, x: torch.Tensor, t: torch.Tensor, precision: str) -> float:
    t0 = time.perf_counter()
    with autocast(torch.device("cpu"), precision):
        model(x, t).float()
    return time.perf_counter() - t0


def run_case(name: str, repeats: int) -> list[str]:
    cfg_name, size, batch = CASES[name]
    cfg = CONFIGS[cfg_name]
    torch.manual_seed(0)
    models = {"meddiff": build_meddiff(cfg).eval(), "diffusers": Diffusers(cfg).eval()}
    params = {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}
    x, t = torch.randn(batch, 2, size, size), torch.randint(0, 1000, (batch,))
    modes = [(lib, prec) for prec in ("fp32", "bf16") for lib in models]
    times: dict[tuple[str, str], list[float]] = {m: [] for m in modes}
    for rnd in range(repeats + 1):
        for lib, prec in modes:
            s = time_call(models[lib], x, t, prec)
            if rnd:
                times[(lib, prec)].append(s * 1e3)
    rows = []
    for lib, prec in modes:
        v = times[(lib, prec)]
        peer = statistics.median(times[("diffusers", prec)])
        rows.append(f"| {name} | {params[lib]:,} | {lib} {prec} | batch {batch} | {statistics.median(v):.0f} "
                    f"({min(v):.0f}-{max(v):.0f}) | {peer / statistics.median(v):.2f}x |")
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), median (min-max) of {args.repeats} alternating rounds\n")
    print("| case | params | mode | batch | ms per call | diffusers / this |")
    print("|---|---|---|---|---|---|")
    for name in args.cases.split(","):
        for row in run_case(name.strip(), args.repeats):
            print(row, flush=True)


if __name__ == "__main__":
    main()
