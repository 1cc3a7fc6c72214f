"""Do meddiff's per-pixel intervals and predicted errors hold on real scans the model never saw? (issues 13, 30)

    python benchmarks/calibration_heldout.py --checkpoint src/meddiff/checkpoints/sr_x4_general.safetensors \\
        [--slices 4] [--size 128] [--sources colin27_t1 ...] [--kernels bicubic kspace_none zip2] \\
        [--calibration label=FILE.json ...] [--samples 4 --samples-kernels bicubic] [--out runs/calibration_heldout]

Held-out MR sources of benchmarks/heldout.py (Colin27 T1, a real EPI T2*, the MR_small T2 spin
echo, the emri multi-frame MR, the pydicom-data T1 shoulder and GRE abdomen; none used in training
or calibration), each truth centre-cropped to at most --size pixels. Per source and per
measurement kernel (--kernels: bicubic = Med-cDiff's anti-aliased bicubic; k-space kernels of
meddiff.data.acquisition, e.g. kspace_none = plain truncation, zip2 = zero-filled x2 as consoles
deliver), x4, never pooled:

- the default one-call path (the model's sampler, posterior_mean for sr_x4_general), with every
  interval calibration given (--calibration label=JSON from scripts/uncertainty_card.py --json-out;
  default: those stored in the model file for that sampler): 90% interval and predicted RMS error;
- with --samples N (on --samples-kernels only; N x the steps of the card's std_sampler calls per
  image): the mean of N samples and `meddiff sample --samples N`'s `<name>_uncertainty`
  (std_scale * sqrt(1 + 1/N) * std), interval mean +- 1.645 x that (Gaussian), and any stored
  calibration for that sampler and N.

Measures over the pixels inside the anatomy (meddiff.uncertainty.evaluate.anatomy_mask of the
truth): 90% coverage, Spearman(|error|, predicted), reliability by deciles of predicted error
(predicted vs actual RMSE per decile, slope, ECE, worst actual/predicted ratio either way) and
RMSE / RMS predicted. Targets (issue 30): coverage 0.88-0.92, every decile within 1.5x, Spearman
>= 0.4. Writes OUT/calibration_heldout.md (and .json with the decile curves, and reliability.png:
the reliability diagrams).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from generalization import condition  # noqa: E402
from heldout import all_sources  # noqa: E402

from meddiff.checkpointing import resolve_model_file  # noqa: E402
from meddiff.diffusion.checkpoint import load_model  # noqa: E402
from meddiff.domain import read_card  # noqa: E402
from meddiff.samplers.registry import ONE_CALL  # noqa: E402
from meddiff.samplers.run import restore, sampler_options, summarise  # noqa: E402
from meddiff.io.atomic import atomic_write_text  # noqa: E402
from meddiff.metrics.calibration import error_std_factor  # noqa: E402
from meddiff.uncertainty.calibrate import IntervalCalibration, read_calibrations  # noqa: E402
from meddiff.uncertainty.evaluate import IntervalReport, anatomy_mask, interval_report  # noqa: E402
from meddiff.uncertainty.evaluate import reliability_figure as uncertainty_reliability_figure  # noqa: E402

MR = ("colin27_t1", "epi_t2star", "mr_t2_se", "mr_emri", "mr_shoulder_t1", "mr_abdomen_gre")
LEVEL = 0.9
Z90 = 1.6449


def centre_crop(x: np.ndarray, size: int) -> np.ndarray:
    h, w = x.shape
    th, tw = min(h, size) // 4 * 4, min(w, size) // 4 * 4
    return np.ascontiguousarray(x[(h - th) // 2 : (h - th) // 2 + th, (w - tw) // 2 : (w - tw) // 2 + tw])


class Pool:
    """Per-pixel arrays of one (source, kernel, method), concatenated over its images."""

    def __init__(self):
        self.err, self.pred, self.cov, self.mask = [], [], [], []

    def add(self, restored, truth, lower, upper, pred, mask):
        self.err.append((restored - truth).ravel()); self.pred.append(np.asarray(pred).ravel())
        self.cov.append(((lower <= truth) & (truth <= upper)).ravel()); self.mask.append(mask.ravel())

    def report(self):
        return interval_report(*(np.concatenate(a) for a in (self.err, self.pred, self.cov, self.mask)))


def run_images(denoiser, cfg, images, kernel: str, sampler: str, steps: int, samples: int):
    """(truth, restored or mean, std or None, condition, lowres) per image."""
    opts = sampler_options(sampler, cfg.diffusion.variance, cfg.sampler.eta, cfg.sampler.grid)
    out = []
    for i, x in enumerate(images):
        m = condition(x, kernel, seed=i)
        s = restore(denoiser, m.cond, sampler=sampler, steps=steps, samples=samples, seed=i, batch_size=1,
                    progress=False, **opts).clamp(-1, 1)
        mean, std = summarise(s)
        out.append((x, mean[0, 0].numpy().astype(np.float64), std[0, 0].numpy() if samples > 1 else None,
                    m.cond[0, 0].numpy(), m.lowres[0, 0].numpy()))
    return out


def rows_for(results, cals: dict[str, IntervalCalibration], gaussian: float | None = None) -> dict[str, Pool]:
    pools = {label: Pool() for label in cals}
    if gaussian:
        pools["uncertainty map x1.645"] = Pool()
    for x, r, s, c, lr in results:
        mask = anatomy_mask(x)
        for label, cal in cals.items():
            lo, hi, rms = cal.interval(LEVEL, r, c, lr, s)
            pools[label].add(r, x, lo, hi, rms, mask)
        if gaussian:
            pred = np.maximum(s * gaussian, 1e-6)
            pools["uncertainty map x1.645"].add(r, x, r - Z90 * pred, r + Z90 * pred, pred, mask)
    return pools


def fmt(source, kernel, path, label, n, rep) -> str:
    ok = rep.meets()
    deciles = " ".join(f"{p:.3f}/{a:.3f}" for p, a in zip(rep.decile_predicted, rep.decile_actual))
    return (f"| {source} | {kernel} | {path} | {label} | {n} | {rep.coverage:.3f}{' ✓' if ok['coverage'] else ''} | "
            f"{rep.spearman:.2f}{' ✓' if ok['spearman'] else ''} | {rep.worst_ratio:.2f}{' ✓' if ok['deciles'] else ''} | "
            f"{rep.slope:.2f} | {rep.ece:.4f} | {rep.rmse / rep.predicted:.2f} | {deciles} |")


def reliability_figure(dump: list[dict], path: Path) -> None:
    """Reliability diagrams, one panel per kernel: actual vs predicted RMSE per decile, one line per source
    and uncertainty, with the identity and the 1.5x band of the target (meddiff.uncertainty.evaluate)."""
    fields = IntervalReport.__dataclass_fields__
    panels: dict[str, dict[str, IntervalReport]] = {}
    for d in dump:
        rep = IntervalReport(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in fields})
        panels.setdefault(f"held-out MR, {d['kernel']} x4", {})[f"{d['source']}, {d['uncertainty']}"] = rep
    if panels:
        uncertainty_reliability_figure(panels, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--slices", type=int, default=4, help="images per volume source")
    p.add_argument("--size", type=int, default=128, help="centre crop of every truth (pixels)")
    p.add_argument("--sources", nargs="*", default=list(MR))
    p.add_argument("--kernels", nargs="*", default=["bicubic", "kspace_none", "zip2"])
    p.add_argument("--calibration", nargs="*", default=[], metavar="LABEL=JSON")
    p.add_argument("--samples", type=int, default=0, help="also the --samples N path (0 = skip)")
    p.add_argument("--samples-kernels", nargs="*", default=["bicubic"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("runs/calibration_heldout"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg, _, denoiser = load_model(args.checkpoint, expect_task="sr")
    model_file = resolve_model_file(args.checkpoint)
    card = read_card(model_file)
    stored = read_calibrations(model_file)
    sampler = cfg.sampler.name
    steps = 1 if sampler in ONE_CALL else cfg.sampler.steps
    one = {f"stored {c.kind}": c for c in stored if c.sampler == f"{sampler} {steps}" and c.samples == 1}
    for spec in args.calibration:
        label, _, path = spec.partition("=")
        one[label] = IntervalCalibration.from_dict(json.loads(Path(path).read_text()))
    lines = [f"Per-pixel 90% intervals and predicted errors on held-out MR, x4, inside the anatomy; {args.checkpoint}. "
             "Targets: coverage 0.88-0.92, worst decile ratio <= 1.5, Spearman >= 0.4 (✓ = met).", "",
             "| source | kernel | path (network calls / image) | uncertainty | images | 90% coverage | Spearman | "
             "worst decile ratio | slope | ECE | RMSE / predicted | deciles predicted/actual RMSE |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    dump = []
    for src in all_sources(args.slices):
        if src.name not in args.sources:
            continue
        images = [centre_crop(x, args.size) for x in src.images]
        for kernel in args.kernels:
            res = run_images(denoiser, cfg, images, kernel, sampler, steps, 1)
            for label, pool in rows_for(res, one).items():
                rep = pool.report()
                lines.append(fmt(src.name, kernel, f"{sampler} ({steps})", label, len(images), rep))
                dump.append({"source": src.name, "kernel": kernel, "path": sampler, "uncertainty": label, **asdict(rep)})
                print(lines[-1], file=sys.stderr)
            if args.samples > 1 and kernel in args.samples_kernels and card is not None and card.std_scale:
                s_name, s_steps = card.std_sampler.split()
                res = run_images(denoiser, cfg, images, kernel, s_name, int(s_steps), args.samples)
                cals = {f"stored {c.kind}": c for c in stored if c.sampler == card.std_sampler and c.samples == args.samples}
                scale = card.std_scale * error_std_factor(args.samples)
                for label, pool in rows_for(res, cals, gaussian=scale).items():
                    rep = pool.report()
                    path = f"{s_name} {s_steps} x{args.samples} ({int(s_steps) * args.samples})"
                    lines.append(fmt(src.name, kernel, path, label, len(images), rep))
                    dump.append({"source": src.name, "kernel": kernel, "path": path, "uncertainty": label, **asdict(rep)})
                    print(lines[-1], file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "calibration_heldout.md", "\n".join(lines) + "\n")
    atomic_write_text(args.out / "calibration_heldout.json", json.dumps(dump, indent=1) + "\n")
    reliability_figure(dump, args.out / "reliability.png")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
