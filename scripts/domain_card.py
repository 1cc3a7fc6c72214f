"""Measure and store a super-resolution model's domain card (meddiff.domain) in its model file.

    python scripts/domain_card.py MODEL.safetensors --prepared runs/prep_mni [--synthetic 0.6] \\
        [--calib-images 16] [--samples 4] [--modality MR] [--anatomy brain] [--contrasts T1 ...] \\
        [--training-data TEXT] [--licence TEXT]

What it measures, on the model's *training distribution* (never on the held-out sources of
benchmarks/generalization.py):
- pixel spacing range of the prepared training slices (manifest.csv: source spacing x padded side / size);
- foreground intensity quantiles and the model score's median / 95th percentile (low-resolution
  versions of the prepared training slices, and with --synthetic of 64 synthetic draws too);
- the std scale that calibrates `meddiff sample --samples N`'s per-pixel std: s = RMSE / RMS(std)
  of the mean of N samples against the truth (meddiff.metrics.calibration), on --calib-images
  images drawn half from the prepared slices and half from the synthetic generator
  (meddiff.data.synth, new random draws), degraded with the model's task.
The card (JSON) is written into the model file's metadata, tensors unchanged.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
import torch


def spacing_range(prepared: Path) -> tuple[float, float]:
    with open(prepared / "manifest.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "train"]
    mm = [float(r["spacing_row_mm"]) * max(int(r["height"]), int(r["width"])) / int(r["size"]) for r in rows]
    return (float(min(mm)), float(max(mm))) if mm else (0.0, 0.0)


def calibration_images(train: np.ndarray, n: int, synthetic: float, seed: int = 123) -> np.ndarray:
    """n images [n, S, S]: a `synthetic` share from meddiff.data.synth (fresh draws), the rest prepared slices."""
    from meddiff.data.synth import mni_tissue_slices, synth_brain, synth_shapes

    g = torch.Generator().manual_seed(seed)
    n_syn = int(round(n * synthetic))
    idx = np.linspace(0, len(train) - 1, n - n_syn).round().astype(int)
    imgs = [np.asarray(train[i], np.float32) for i in idx]
    if n_syn:
        tissue = mni_tissue_slices(train.shape[-1])
        for k in range(n_syn):
            imgs.append((synth_shapes(train.shape[-1], g) if k % 3 == 2 else synth_brain(tissue, g))[0].numpy())
    return np.stack(imgs)


def fit_std_scale(denoiser, cfg, images: np.ndarray, samples: int, sampler: str, steps: int) -> float:
    """RMSE / RMS(std) (eq. (1) factor included) of `samples` samples per image with `sampler`, `steps`."""
    from meddiff.data.degrade import SuperResolution
    from meddiff.samplers.run import restore, sampler_options, summarise
    from meddiff.metrics.calibration import calibration

    sr = SuperResolution(cfg.task.sr_factor)
    x = torch.from_numpy(images)[:, None]
    cond = sr.upsample(sr.downsample(x), tuple(x.shape[-2:]))
    s = cfg.sampler
    out = restore(denoiser, cond, sampler=sampler, steps=steps, samples=samples, seed=7, batch_size=4, progress=False,
                  **sampler_options(sampler, cfg.diffusion.variance, s.eta, s.grid))
    mean, std = summarise(out)
    res = calibration(std.numpy(), (mean - x).numpy(), mask=(x > -0.95).numpy(), samples=samples)
    return float(res.ratio)


def set_default_sampler(model: Path, name: str) -> None:
    """Rewrite the sampler section of the config stored in `model`'s metadata (tensors unchanged)."""
    import dataclasses

    import yaml

    from meddiff import config as config_mod
    from meddiff.checkpointing import read_model_file, update_metadata

    cfg = read_model_file(model, "meddiff-ddpm-v1").cfg
    sampler = dataclasses.replace(cfg.sampler, name=name, steps=1 if name == "posterior_mean" else cfg.sampler.steps)
    update_metadata(model, config=yaml.safe_dump(config_mod.to_dict(dataclasses.replace(cfg, sampler=sampler)), sort_keys=False))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path)
    p.add_argument("--prepared", type=Path, required=True, help="the prepared folder the model trained on")
    p.add_argument("--synthetic", type=float, default=0.0, help="share of synthetic calibration images (the training mix)")
    p.add_argument("--calib-images", type=int, default=16)
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--std-sampler", default="dpm_solver_pp", help="the sampler whose spread is calibrated (default dpm_solver_pp)")
    p.add_argument("--std-steps", type=int, default=10)
    p.add_argument("--modality", nargs="*", default=["MR"])
    p.add_argument("--anatomy", default="brain")
    p.add_argument("--contrasts", nargs="*", default=["T1"])
    p.add_argument("--training-data", default="")
    p.add_argument("--licence", default="")
    p.add_argument("--default-sampler", default=None, metavar="NAME",
                   help="also store this as the model's default sampler (config sampler.name; posterior_mean sets steps 1)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from meddiff.data.dataset import load_prepared
    from meddiff.domain import card_from_training, write_card
    from meddiff.diffusion.checkpoint import load_model

    cfg, _, denoiser = load_model(args.model, expect_task="sr")
    train = load_prepared(args.prepared).arrays["train"]
    aug = cfg.augment
    degradation = (f"x{cfg.task.sr_factor:g}: kernels {'/'.join(aug.sr_kernels)}, extra blur {list(aug.blur)} px, "
                   f"{aug.noise_kind} noise {list(aug.hr_noise)} (before) / {list(aug.lr_noise)} (after downsampling), "
                   f"gamma {list(aug.gamma)}, bias field {aug.bias_field}, synthetic share {aug.synth_fraction}")
    mix = np.asarray(train)
    if args.synthetic > 0:  # the intensities the model trained on include the synthetic contrasts
        mix = np.concatenate([mix, calibration_images(mix, 64, 1.0, seed=321)])
    card = card_from_training(mix, denoiser, cfg.task.sr_factor, spacing_mm=spacing_range(args.prepared),
                              modalities=tuple(m.upper() for m in args.modality), anatomy=args.anatomy,
                              contrasts=tuple(args.contrasts), training_data=args.training_data,
                              degradation=degradation, licence=args.licence)
    imgs = calibration_images(train, args.calib_images, args.synthetic)
    scale = fit_std_scale(denoiser, cfg, imgs, args.samples, args.std_sampler, args.std_steps)
    import dataclasses

    card = dataclasses.replace(card, std_scale=scale, std_sampler=f"{args.std_sampler} {args.std_steps}",
                               notes=card.notes + (f"std scale {scale:.2f} (RMSE of the mean / predicted std) fitted on "
                                                   f"{len(imgs)} training-distribution images, {args.samples} samples each "
                                                   f"of {args.std_sampler} {args.std_steps} steps",))
    write_card(args.model, card)
    if args.default_sampler:
        set_default_sampler(args.model, args.default_sampler)
    print(card.to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
