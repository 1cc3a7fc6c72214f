"""Is `meddiff sample --samples N`'s uncertainty calibrated on real images the model never saw? (issue 13)

    python benchmarks/calibration_heldout.py --checkpoint src/meddiff/checkpoints/sr_x4_general.safetensors \\
        [--samples 4] [--slices 4] [--sources ...] [--out runs/calibration_heldout]

For each held-out source of benchmarks/heldout.py (x4 anti-aliased bicubic measurement, as
benchmarks/generalization.py): N samples per image with the sampler the model card's std scale was
fitted for (card.std_sampler), their mean and per-pixel std; the predicted error of the mean is
std_scale * sqrt(1 + 1/N) * std (the `<name>_uncertainty` product of `meddiff sample`). Per source,
over the foreground pixels (truth > -0.95): RMSE of the mean, RMS of the predicted error, their
ratio (1 = calibrated; > 1 overconfident) before and after the card's scale, the expected
calibration error (ECE, meddiff.metrics.calibration, 10 bins by predicted error) and the
Spearman correlation of predicted and actual |error|. Writes OUT/calibration_heldout.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from generalization import condition  # noqa: E402
from heldout import all_sources  # noqa: E402

from meddiff.checkpointing import resolve_model_file  # noqa: E402
from meddiff.diffusion.checkpoint import load_model  # noqa: E402
from meddiff.domain import read_card  # noqa: E402
from meddiff.inference import restore, sampler_options, summarise  # noqa: E402
from meddiff.io.atomic import atomic_write_text  # noqa: E402
from meddiff.metrics.calibration import calibration  # noqa: E402


def source_row(src, denoiser, cfg, sampler: str, steps: int, samples: int, scale: float) -> dict[str, float]:
    stds, errs, masks = [], [], []
    opts = sampler_options(sampler, cfg.diffusion.variance, cfg.sampler.eta, cfg.sampler.grid)
    for x in src.images:
        c = condition(x, "bicubic").cond
        out = restore(denoiser, c, sampler=sampler, steps=steps, samples=samples, seed=0, batch_size=1, progress=False, **opts)
        mean, std = summarise(out.clamp(-1, 1))
        t = torch.from_numpy(x)[None, None]
        stds.append(std.flatten().numpy()); errs.append((mean - t).flatten().numpy()); masks.append((t > -0.95).flatten().numpy())
    std, err, mask = np.concatenate(stds), np.concatenate(errs), np.concatenate(masks)
    raw = calibration(std, err, mask, samples=samples)
    cal = calibration(std * scale, err, mask, samples=samples)
    return {"n": len(src.images), "rmse": cal.rmse, "pred": cal.rmv, "ratio_raw": raw.ratio, "ratio": cal.ratio,
            "ece": cal.ece, "spearman": cal.spearman}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--slices", type=int, default=4, help="images per volume source")
    p.add_argument("--sources", nargs="*", default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("runs/calibration_heldout"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg, _, denoiser = load_model(args.checkpoint, expect_task="sr")
    card = read_card(resolve_model_file(args.checkpoint))
    if card is None or not card.std_scale:
        p.error(f"{args.checkpoint}: no calibrated std scale in its model card (scripts/domain_card.py writes one)")
    sampler, steps = (card.std_sampler or f"{cfg.sampler.name} {cfg.sampler.steps}").split()
    lines = [f"Calibration of the predicted error on held-out real images: {args.samples} samples of {sampler} "
             f"{steps} steps, std scale {card.std_scale:.2f} (fitted on the training distribution).", "",
             "| source | n | RMSE of the mean | RMS predicted error | RMSE / predicted, raw std | RMSE / predicted, calibrated | "
             "ECE | Spearman(|err|, pred) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for src in all_sources(args.slices):
        if args.sources and src.name not in args.sources:
            continue
        r = source_row(src, denoiser, cfg, sampler, int(steps), args.samples, card.std_scale)
        lines.append(f"| {src.name} | {r['n']} | {r['rmse']:.4f} | {r['pred']:.4f} | {r['ratio_raw']:.2f} | {r['ratio']:.2f} | "
                     f"{r['ece']:.4f} | {r['spearman']:.2f} |")
        print(lines[-1], file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "calibration_heldout.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
