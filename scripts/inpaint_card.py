"""Measure and store an inpainting model's domain card (meddiff.domain) in its model file.

    python scripts/inpaint_card.py MODEL.safetensors --prepared runs/prep_mni [--synthetic 0.5] \\
        [--calib-images 16] [--samples 4] [--std-sampler dpm_solver_pp --std-steps 10] \\
        [--modality MR] [--anatomy brain] [--contrasts T1 ...] [--training-data TEXT] [--licence TEXT] \\
        [--default-sampler NAME [--default-steps N]]

As scripts/domain_card.py does for super-resolution, on the model's *training distribution* only
(prepared MNI152 slices and fresh synthetic draws; never the held-out sources of
benchmarks/inpaint_heldout.py):
- pixel spacing range of the prepared training slices and foreground intensity quantiles (the
  modality / spacing / histogram checks of `meddiff sample`; no model-based score: that one scores
  super-resolution);
- the std scale that calibrates `meddiff sample --samples N` inside the holes: s = RMSE of the mean of
  N samples / their predicted error (std * sqrt(1 + 1/N); meddiff.metrics.calibration), over the hole
  pixels of --calib-images images with random training masks (the model's task.mask_kinds) of 10-30%.
The card (JSON) is written into the model file's metadata, tensors unchanged; --default-sampler also
rewrites the stored sampler section (the one `meddiff sample` uses without --sampler).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from domain_card import calibration_images, spacing_range  # noqa: E402


def fit_std_scale(denoiser, cfg, images: np.ndarray, samples: int, sampler: str, steps: int, seed: int = 7) -> float:
    from meddiff.data.masks import random_mask
    from meddiff.samplers.run import restore, sampler_options, summarise
    from meddiff.metrics.calibration import calibration

    g = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(images)[:, None]
    m = torch.stack([random_mask(*x.shape[-2:], tuple(cfg.task.mask_kinds), (0.1, 0.3), g) for _ in range(len(x))])[:, None]
    planes = torch.cat([x * (1 - m), m], dim=1)
    s = cfg.sampler
    out = restore(denoiser, planes, sampler=sampler, steps=steps, samples=samples, seed=seed, batch_size=4, progress=False,
                  **sampler_options(sampler, cfg.diffusion.variance, s.eta, s.grid))
    mean, std = summarise(out.clamp(-1, 1))
    res = calibration(std.numpy(), (mean - x).numpy(), mask=m.bool().numpy(), samples=samples)
    return float(res.ratio)


def set_default_sampler(model: Path, name: str, steps: int) -> None:
    import yaml

    from meddiff import config as config_mod
    from meddiff.checkpointing import read_model_file, update_metadata

    cfg = read_model_file(model, "meddiff-ddpm-v1").cfg
    sampler = dataclasses.replace(cfg.sampler, name=name, steps=1 if name == "posterior_mean" else steps)
    update_metadata(model, config=yaml.safe_dump(config_mod.to_dict(dataclasses.replace(cfg, sampler=sampler)), sort_keys=False))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path)
    p.add_argument("--prepared", type=Path, required=True)
    p.add_argument("--synthetic", type=float, default=0.5)
    p.add_argument("--calib-images", type=int, default=16)
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--std-sampler", default="dpm_solver_pp")
    p.add_argument("--std-steps", type=int, default=10)
    p.add_argument("--modality", nargs="*", default=["MR"])
    p.add_argument("--anatomy", default="brain")
    p.add_argument("--contrasts", nargs="*", default=["T1"])
    p.add_argument("--training-data", default="")
    p.add_argument("--licence", default="")
    p.add_argument("--default-sampler", default=None)
    p.add_argument("--default-steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from meddiff.data.dataset import load_prepared
    from meddiff.diffusion.checkpoint import load_model
    from meddiff.domain import DomainCard, foreground_quantiles, write_card

    cfg, _, denoiser = load_model(args.model, expect_task="inpaint")
    train = np.asarray(load_prepared(args.prepared).arrays["train"])
    mix = np.concatenate([train, calibration_images(train, 64, 1.0, seed=321)]) if args.synthetic > 0 else train
    aug, t = cfg.augment, cfg.task
    imgs = calibration_images(train, args.calib_images, args.synthetic)
    scale = fit_std_scale(denoiser, cfg, imgs, args.samples, args.std_sampler, args.std_steps)
    card = DomainCard(
        modalities=tuple(m.upper() for m in args.modality), anatomy=args.anatomy, contrasts=tuple(args.contrasts),
        training_data=args.training_data, licence=args.licence, spacing_mm=spacing_range(args.prepared),
        degradation=(f"inpainting: {'/'.join(t.mask_kinds)} holes of {t.mask_coverage[0]:.0%}-{t.mask_coverage[1]:.0%}, "
                     f"gamma {list(aug.gamma)}, bias field {aug.bias_field}, synthetic share {aug.synth_fraction}"),
        intensity_quantiles=foreground_quantiles(mix), std_scale=scale, std_sampler=f"{args.std_sampler} {args.std_steps}",
        notes=(f"std scale {scale:.2f} (RMSE of the mean / predicted error, inside the holes) fitted on {len(imgs)} "
               f"training-distribution images with 10-30% holes, {args.samples} samples each of {args.std_sampler} "
               f"{args.std_steps} steps",))
    write_card(args.model, card)
    if args.default_sampler:
        set_default_sampler(args.model, args.default_sampler, args.default_steps)
    print(card.to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
