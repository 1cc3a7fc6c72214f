"""Med-cDiff Figure 3: Dice of a tissue segmenter (and accuracy of a slice classifier) vs the super-resolution factor.

    python benchmarks/dice_vs_factor.py [--checkpoint CKPT] [--slices 24] [--steps N] [--sampler NAME]
                                        [--factors 2.83 4 ...] [--out runs/dice_vs_factor] [--write-folders DIR]

Test images: held-out Colin27 (another anatomy than the MNI152 template the segmenter, the
classifier and the demo SR models were trained on): the shipped stacks
src/meddiff/data/samples/colin27 (brain-extracted ch2bet, slices every 3 mm), prepared like
`meddiff prepare` (one min/max window, padded to square, 128 x 128). The fixed set: N/2 axial
and N/2 coronal slices at stack indices round(linspace(0.2, 0.8, N/2) * (n - 1)) (default N = 24).

For every factor f (default meddiff.data.degrade.PAPER_SR_FACTORS): the measurement is
SuperResolution(f).downsample(truth) (anti-aliased bicubic); methods:
  input     nearest-neighbour upsampling of the measurement (its pixels, shown at full size)
  bicubic   meddiff.baselines.interpolation, bicubic
  bilinear  meddiff.baselines.interpolation, bilinear
  meddiff   --checkpoint restored with meddiff.samplers.run.restore from the condition of the
            checkpoint's task at factor f (dataclasses.replace(cfg.task, sr_factor=f)), with the
            checkpoint's sampler and steps (override with --sampler/--steps), seed --seed
Dice: meddiff.downstream.Segmenter (shipped: other / grey matter / white matter) of each
method's image against the segmentation of the ground-truth image by the same segmenter (no
manual labels exist for Colin27), mean over grey and white matter per slice, then the mean
over slices with a per-slice bootstrap 95% CI (meddiff.metrics.stats.bootstrap_ci).
Accuracy: meddiff.downstream.Classifier (shipped: slice orientation) against each slice's
true orientation, same CI. Writes OUT/dice_vs_factor.{csv,md,png}; --write-folders DIR also
writes DIR/x<f>/{truth,input,bicubic,bilinear,meddiff}/<slice>.nii.gz (float32 in [-1, 1],
identical names) for `meddiff evaluate --truth x4=DIR/x4/truth --pred bicubic@x4=DIR/x4/bicubic ...`.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

from meddiff.baselines.interpolation import interpolate_baseline
from meddiff.data.degrade import PAPER_SR_FACTORS, SuperResolution, build_degradation
from meddiff.downstream import Classifier, Segmenter, mean_dice
from meddiff.downstream.slices import ORIENTATIONS, load_colin27_samples
from meddiff.metrics.stats import bootstrap_ci

METHODS = ("truth", "input", "bicubic", "bilinear", "meddiff")


def fixed_slices(n: int) -> tuple[np.ndarray, np.ndarray, list[str], list[float]]:
    """(images [n, 128, 128], orientation labels [n], names, pixel size in mm) of the fixed Colin27 set."""
    from meddiff.data.samples import samples_dir
    from meddiff.io import read_volume

    s = load_colin27_samples()
    images, labels, names, mm = [], [], [], []
    for o in ("axial", "coronal"):
        k = ORIENTATIONS.index(o)
        idx = np.flatnonzero(s.orientation == k)
        shape = read_volume(Path(samples_dir("colin27")) / "colin27" / f"{o}.nii.gz").array.shape[1:]
        for j in np.round(np.linspace(0.2, 0.8, n // 2) * (len(idx) - 1)).astype(int):
            images.append(s.images[idx[j]])
            labels.append(k)
            names.append(f"colin27_{o}_{j:03d}")
            mm.append(max(shape) / s.images.shape[-1])  # the source is 1 mm in-plane; padded side / 128
    return np.stack(images), np.asarray(labels), names, mm


def restorations(x: torch.Tensor, f: float, model, steps: int | None, sampler: str | None, seed: int) -> dict[str, torch.Tensor]:
    """Every method's [N, 1, H, W] image at factor f (see the module docstring)."""
    size = tuple(x.shape[-2:])
    lr = SuperResolution(f, "bicubic").downsample(x)
    out = {"truth": x, "input": interpolate_baseline(lr, size, "nearest"),
           "bicubic": interpolate_baseline(lr, size, "bicubic"), "bilinear": interpolate_baseline(lr, size, "bilinear")}
    if model is not None:
        from meddiff.samplers.run import restore, sampler_options

        cfg, denoiser = model
        task = dataclasses.replace(cfg.task, sr_factor=f)
        cond, _ = build_degradation(task)(x)
        name = sampler or cfg.sampler.name
        opts = sampler_options(name, cfg.diffusion.variance, cfg.sampler.eta, cfg.sampler.grid)
        out["meddiff"] = restore(denoiser, cond, sampler=name, steps=steps or cfg.sampler.steps, seed=seed,
                                 progress=False, **opts)[0].clamp(-1, 1)
    return out


def write_slices(folder: Path, images: torch.Tensor, names: list[str], mm: list[float], description: str,
                 suffix: str = "", synthetic: bool = True) -> None:
    """images [N, 1, H, W] -> folder/<name><suffix>.nii.gz, float32, 2D, pixel size mm (also used by compare.py)."""
    from meddiff.io import Volume, write_volume

    folder.mkdir(parents=True, exist_ok=True)
    for img, name, s in zip(images[:, 0].numpy(), names, mm):
        vol = Volume(np.ascontiguousarray(img, dtype=np.float32), (s, s), np.diag([s, s, 1.0, 1.0]), "colin27",
                     folder / name)
        write_volume(vol, folder / f"{name}{suffix}.nii.gz", description=description, synthetic=synthetic)


def write_folders(root: Path, f: float, images: dict[str, torch.Tensor], names: list[str], mm: list[float]) -> None:
    for method, imgs in images.items():
        write_slices(root / factor_name(f) / method, imgs, names, mm,
                     f"{method} x{f:.4g} (benchmarks/dice_vs_factor.py)", synthetic=method == "meddiff")


def factor_name(f: float) -> str:
    return f"x{f:.3g}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="meddiff SR checkpoint (file, checkpoint folder or run folder)")
    p.add_argument("--slices", type=int, default=24, help="even number of Colin27 slices, half axial half coronal (default 24)")
    p.add_argument("--factors", type=float, nargs="+", default=list(PAPER_SR_FACTORS))
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the checkpoint's)")
    p.add_argument("--sampler", default=None, help="sampler (default: the checkpoint's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--segmenter", default=None, help="segmenter file (default: shipped)")
    p.add_argument("--classifier", default=None, help="classifier file (default: shipped)")
    p.add_argument("--bootstrap", type=int, default=2000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("runs/dice_vs_factor"))
    p.add_argument("--write-folders", type=Path, default=None, metavar="DIR")
    args = p.parse_args(argv)
    if args.slices < 2 or args.slices % 2:
        p.error(f"--slices {args.slices}: expected an even number >= 2")
    torch.set_num_threads(args.threads)
    seg, clf = Segmenter.load(args.segmenter), Classifier.load(args.classifier)
    model = None
    if args.checkpoint:
        from meddiff.diffusion.checkpoint import load_model

        cfg, _, denoiser = load_model(args.checkpoint, expect_task="sr")
        model = (cfg, denoiser)
    images, labels, names, mm = fixed_slices(args.slices)
    x = torch.from_numpy(images)[:, None]
    ref = seg(x)
    methods = [m for m in METHODS if m != "meddiff" or model is not None]
    rows: list[dict] = []
    t0 = time.perf_counter()
    for f in args.factors:
        imgs = restorations(x, f, model, args.steps, args.sampler, args.seed)
        if args.write_folders:
            write_folders(args.write_folders, f, imgs, names, mm)
        for m in methods:
            d = mean_dice(seg(imgs[m]), ref, seg.n_classes).numpy()
            acc = (clf(imgs[m]).argmax(1).numpy() == labels).astype(float)
            for metric, v in (("dice", d), ("accuracy", acc)):
                ci = bootstrap_ci(v, None, n_resamples=args.bootstrap, seed=args.seed)
                rows.append({"method": m, "factor": f, "metric": metric, "mean": ci.mean, "ci_lo": ci.lo, "ci_hi": ci.hi, "n": len(v)})
        print(f"x{f:.3g} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "dice_vs_factor.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    md = table(rows, methods, args)
    (args.out / "dice_vs_factor.md").write_text(md, encoding="utf-8")
    print(md)
    plot(rows, methods, args.out / "dice_vs_factor.png")
    print(f"wrote {args.out}/dice_vs_factor.{{csv,md,png}}" + (f" and {args.write_folders}/x*/" if args.write_folders else ""))
    return 0


def table(rows: list[dict], methods: list[str], args: argparse.Namespace) -> str:
    factors = list(dict.fromkeys(r["factor"] for r in rows))
    out = []
    for metric, title in (("dice", "Dice (mean of grey and white matter) vs the segmentation of the ground truth"),
                          ("accuracy", "Orientation accuracy of the classifier")):
        out.append(f"### {title}\n\n| method | " + " | ".join(factor_name(f) for f in factors) + " |")
        out.append("|---|" + "---|" * len(factors))
        for m in methods:
            cells = [next(r for r in rows if r["method"] == m and r["factor"] == f and r["metric"] == metric) for f in factors]
            out.append(f"| {m} | " + " | ".join(f"{c['mean']:.3f} [{c['ci_lo']:.3f}, {c['ci_hi']:.3f}]" for c in cells) + " |")
        out.append("")
    n = rows[0]["n"]
    out.append(f"{n} Colin27 slices ({n // 2} axial, {n // 2} coronal), mean [per-slice bootstrap 95% CI, "
               f"{args.bootstrap} resamples, seed {args.seed}]; Dice reference = the segmentation of the ground-truth image "
               "by the same segmenter (truth row = 1 by construction); input = nearest-neighbour upsampling of the measurement"
               + (f"; meddiff = {args.checkpoint}, sampler {args.sampler or 'of the checkpoint'}, steps {args.steps or 'of the checkpoint'}"
                  if args.checkpoint else "") + "\n")
    return "\n".join(out)


def plot(rows: list[dict], methods: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric, label in zip(axes, ("dice", "accuracy"), ("Dice vs segmentation of the truth", "orientation accuracy")):
        for m in methods:
            rs = [r for r in rows if r["method"] == m and r["metric"] == metric]
            f = np.array([r["factor"] for r in rs])
            mean = np.array([r["mean"] for r in rs])
            lo, hi = np.array([r["ci_lo"] for r in rs]), np.array([r["ci_hi"] for r in rs])
            ax.plot(f, mean, marker="o", label=m)
            ax.fill_between(f, lo, hi, alpha=0.2)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("super-resolution factor")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle("Colin27: downstream scores vs SR factor (95% bootstrap CI over slices)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
