"""Fit and store the per-pixel interval calibration of a super-resolution model (issue 30).

    python scripts/uncertainty_card.py MODEL.safetensors --prepared runs/prep_mni [--images 192] \\
        [--sampler posterior_mean] [--samples 1] [--scale learned|heuristic] [--dry-run]

Calibration data (the model's *training distribution* only, never a held-out source of
benchmarks/heldout.py): half the images are slices of the prepared training set (MNI152 2009a),
the other half fresh draws of meddiff.data.synth (random-contrast MNI152 tissue brains and random
shapes, seed 2030: not the training draws); each gets the training appearance augmentation
(gamma 0.7-1.4, bias field 0.2), with --noise S Rician noise of std U(0, S) on half of them
(default 0: noisy calibration truths measured worse on the held-out sources), and one measurement
kernel in turn (bicubic, kspace_none, kspace_hamming, zip2, area; x factor of the model).
Images i with i % 4 in (0, 3) fit the error scale (meddiff.uncertainty.features.fit_regressor),
the others the conformal table (meddiff.uncertainty.conformal), inside the anatomy of the truth.
The result (meddiff.uncertainty.IntervalCalibration, JSON) is stored in the model file's
metadata under ``uncertainty`` (tensors unchanged), one entry per sampler.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

KERNELS = ("bicubic", "kspace_none", "kspace_hamming", "zip2", "area")


def measure(x: torch.Tensor, kernel: str, factor: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(lowres [1, 1, h, w], condition [1, 1, H, W]) of truth x [1, 1, H, W] in [-1, 1] by `kernel`."""
    from meddiff.data.acquisition import ACQ_KERNELS, low_res
    from meddiff.data.degrade import SuperResolution

    sr = SuperResolution(factor)
    size = sr.low_res_size(x.shape[-2:])
    if kernel in ACQ_KERNELS:
        lr = low_res((x.double() + 1) / 2, kernel, size, 0.0, torch.Generator().manual_seed(seed)).float() * 2 - 1
    else:
        lr = sr.downsample(x)
    lr = lr.clamp(-1, 1)
    return lr, sr.upsample(lr, tuple(x.shape[-2:]))


def calibration_truths(train: np.ndarray, n: int, seed: int = 2030, noise: float = 0.0) -> list[np.ndarray]:
    """n truths [S, S] in [-1, 1]: half prepared training slices, half fresh synthetic draws, each
    with gamma, bias field and (with noise > 0, every other pair) Rician noise of std U(0, noise)."""
    from meddiff.data.augment import add_noise, apply_bias, bias_field, gamma_contrast
    from meddiff.data.synth import mni_tissue_slices, synth_brain, synth_shapes

    g = torch.Generator().manual_seed(seed)
    size = train.shape[-1]
    tissue = mni_tissue_slices(size)
    fg = [i for i in range(len(train)) if (train[i] > -0.95).mean() > 0.15]
    idx = np.asarray(fg)[np.linspace(0, len(fg) - 1, n - n // 2).round().astype(int)]
    out = []
    for k in range(n):
        if k % 2 == 0:
            x = torch.from_numpy(np.array(train[idx[k // 2]], np.float32))[None, None]
        else:
            x = (synth_shapes(size, g) if k % 6 == 5 else synth_brain(tissue, g))[None]
        u = lambda lo, hi: lo + (hi - lo) * torch.rand((1, 1, 1, 1), generator=g)  # noqa: E731
        x = gamma_contrast(x, u(0.7, 1.4))
        x = apply_bias(x, bias_field(tuple(x.shape), torch.tensor(0.2), g, x))
        if noise > 0 and (k // 2) % 2 == 1:
            x = add_noise(x, u(0.0, noise), "rician", g)
        lo, hi = x.min(), x.max()
        out.append(((x - lo) / (hi - lo).clamp_min(1e-6) * 2 - 1)[0, 0].numpy())
    return out


def restore_set(denoiser, cfg, truths: list[np.ndarray], sampler: str, steps: int, samples: int, factor: float,
                kernels: tuple[str, ...] = KERNELS, seed: int = 11):
    """Per truth (restored or mean [H, W], std or None, condition, lowres, kernel): one kernel each in turn."""
    from meddiff.samplers.run import restore, sampler_options, summarise

    opts = sampler_options(sampler, cfg.diffusion.variance, cfg.sampler.eta, cfg.sampler.grid)
    rows = []
    for i, x in enumerate(truths):
        kernel = kernels[i % len(kernels)]
        lr, cond = measure(torch.from_numpy(x)[None, None], kernel, factor, seed + i)
        out = restore(denoiser, cond, sampler=sampler, steps=steps, samples=samples, seed=seed + i, batch_size=1,
                      progress=False, **opts).clamp(-1, 1)
        mean, std = summarise(out)
        rows.append((mean[0, 0].numpy(), std[0, 0].numpy() if samples > 1 else None, cond[0, 0].numpy(),
                     lr[0, 0].numpy(), kernel))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path)
    p.add_argument("--prepared", type=Path, required=True, help="the prepared folder the model trained on")
    p.add_argument("--images", type=int, default=192)
    p.add_argument("--sampler", default="posterior_mean")
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--samples", type=int, default=1)
    p.add_argument("--scale", choices=["learned", "heuristic"], default="learned")
    p.add_argument("--noise", type=float, default=0.0, help="Rician noise std (max) on half the calibration truths")
    p.add_argument("--features", nargs="*", default=None, help="regressor inputs (meddiff.uncertainty.features.FEATURES)")
    p.add_argument("--alpha", type=float, default=0.9)
    p.add_argument("--bins", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dry-run", action="store_true", help="print the calibration, do not write it into the model")
    p.add_argument("--json-out", type=Path, default=None, help="also write the calibration to this JSON file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from meddiff.data.dataset import load_prepared
    from meddiff.diffusion.checkpoint import load_model
    from meddiff.uncertainty.calibrate import fit_calibration, store_calibration

    cfg, _, denoiser = load_model(args.model, expect_task="sr")
    train = load_prepared(args.prepared).arrays["train"]
    truths = calibration_truths(np.asarray(train), args.images, noise=args.noise)
    steps = 1 if args.sampler in ("posterior_mean", "student") else args.steps
    rows = restore_set(denoiser, cfg, truths, args.sampler, steps, args.samples, cfg.task.sr_factor)
    note = (f"fitted on {len(truths)} training-distribution images ({len(truths) - len(truths) // 2} MNI152 2009a training slices, "
            f"{len(truths) // 2} fresh synthetic random-contrast brains/shapes of meddiff.data.synth), gamma/bias augmentation, "
            f"{f'Rician noise 0-{args.noise:g} on half, ' if args.noise else ''}kernels {'/'.join(KERNELS)} x{cfg.task.sr_factor:g}; scale fitted on images i % 4 in (0, 3), "
            f"conformal table on the others, pixels inside the anatomy; no held-out source")
    cal = fit_calibration(rows, truths, sampler=f"{args.sampler} {steps}", samples=args.samples, kind=args.scale,
                          alpha=args.alpha, bins=args.bins, features=tuple(args.features) if args.features else None,
                          data="MNI152 2009a training slices and synthetic contrasts of it", note=note)
    print(cal.to_json())
    if args.json_out is not None:
        from meddiff.io.atomic import atomic_write_text

        atomic_write_text(args.json_out, cal.to_json() + "\n")
    if not args.dry_run:
        store_calibration(args.model, cal)
        print(f"stored in {args.model} (metadata 'uncertainty')", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
