"""Chest X-ray denoising on held-out patients' films, per source and per noise level.

The test split of a chest-film folder (``../shared/data/cxr_train``: ``metadata.csv`` with a
patient-level ``split`` column and the film's ``source_dataset``) is degraded at fixed levels,
seeded per film, and restored by each method; scores are per source (adult NIH / pediatric
Kermany), never pooled: PSNR and SSIM on the [-1, 1] scale (data range 2) and LPIPS, mean with a
95% bootstrap CI over films.

Levels: Med-cDiff's noise (Gaussian sigma 0.1 in [-1, 1] units + 1% salt-and-pepper) and low-dose
exposures at 25%, 10% and 5% of the full dose (meddiff.data.low_dose: Poisson quanta + electronic
noise, N0 = 2e4, sigma_e = 10 counts). Methods: the noisy film, 3x3 median, non-local means
(scikit-image, noise level estimated per film), median then NLM, BM3D (the `bm3d` package, when
installed), a meddiff checkpoint with its stored sampler (--checkpoint) and learned baselines
(--baseline NAME=RUN: pix2pix, UP-GAN; dropout/noise seeded, one prediction). --fid adds FID and
KID per source, level and method: Inception features of the restored films against the same
source's clean test films (FID is biased upwards at these n: compare only within a table, read KID).

    python benchmarks/cxr_denoise.py --checkpoint xray_denoise --per-source 40 --out runs/bench_cxr_denoise
    python benchmarks/cxr_denoise.py --checkpoint xray_denoise --baseline pix2pix=runs/pix2pix_denoise_cxr --fid
    python benchmarks/cxr_denoise.py --no-classical --baseline pix2pix=runs/pix2pix_denoise_cxr --fid   # one new baseline
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from meddiff.baselines.classical import median_filter, nl_means
from meddiff.data.degrade import Denoise
from meddiff.data.low_dose import LowDose, low_dose
from meddiff.metrics.image import psnr, ssim
from meddiff.metrics.lpips import lpips_distance
from meddiff.metrics.stats import bootstrap_ci

LEVELS = {
    "gauss0.1+sp1%": None,
    "dose25%": 0.25,
    "dose10%": 0.10,
    "dose5%": 0.05,
}


def read_film(path: Path) -> np.ndarray:
    """A film scaled by its own 0.5 and 99.5 percentiles to [-1, 1], as `meddiff prepare --clip-percentiles 0.5 99.5`."""
    a = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
    lo, hi = np.percentile(a, [0.5, 99.5])
    return np.clip((a - lo) / max(hi - lo, 1e-6) * 2 - 1, -1, 1).astype(np.float32)


def test_films(root: Path, per_source: int) -> dict[str, list[Path]]:
    rows = list(csv.DictReader(open(root / "metadata.csv", newline="")))
    out: dict[str, list[Path]] = {}
    for r in rows:
        if r["split"] != "test":
            continue
        source = "adult (NIH)" if r["source_dataset"].startswith("NIH") else "pediatric (Kermany)"
        out.setdefault(source, []).append(root / r["file"])
    return {k: sorted(v)[:per_source] for k, v in sorted(out.items())}


def degrade(x0: np.ndarray, level: str, seed: int) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(x0)[None, None]
    dose = LEVELS[level]
    if dose is None:
        y = Denoise(noise_std=(0.1, 0.1), salt_pepper=(0.01, 0.01))(x, g)[0]
    else:
        y = low_dose(x, torch.tensor([dose]), LowDose(), g)
    return y[0, 0].numpy()


def bm3d_or_none():
    try:
        import bm3d  # noqa: F401
    except ImportError:
        return None

    def run(y: np.ndarray) -> np.ndarray:
        import bm3d
        from skimage.restoration import estimate_sigma
        sigma = float(estimate_sigma(y))
        return np.asarray(bm3d.bm3d(y, sigma_psd=max(sigma, 1e-3)), dtype=np.float32)
    return run


def model_restorer(checkpoint: str):
    from meddiff.samplers.run import restore, sampler_options
    from meddiff.diffusion.checkpoint import load_pretrained
    cfg, denoiser = load_pretrained(checkpoint)
    s = cfg.sampler

    def run(y: np.ndarray) -> np.ndarray:
        cond = torch.from_numpy(y)[None, None]
        opts = sampler_options(s.name, cfg.diffusion.variance, getattr(s, "eta", 0.0)) if s.name in ("ancestral", "ddim", "dpm_solver_pp") else {}
        out = restore(denoiser, cond, sampler=s.name, steps=s.steps, samples=1, seed=0, progress=False, **opts)
        return out[0, 0, 0].numpy()
    return run


def baseline_restorer(path: str):
    """A learned baseline run (objective baseline: pix2pix, UP-GAN), one seeded prediction per film."""
    from meddiff.baselines.registry import load_baseline, restore_baseline

    _, model = load_baseline(path)

    def run(y: np.ndarray) -> np.ndarray:
        cond = torch.from_numpy(np.ascontiguousarray(y, np.float32))[None, None]
        return restore_baseline(model, cond, samples=1, seed=0, batch_size=1)[0, 0, 0].numpy()
    return run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/cxr_train")
    ap.add_argument("--checkpoint", action="append", default=[], help="NAME=MODEL or MODEL (repeatable)")
    ap.add_argument("--baseline", action="append", default=[], help="NAME=RUN of a learned baseline (repeatable)")
    ap.add_argument("--fid", action="store_true", help="FID and KID of each method's films against the clean test films")
    ap.add_argument("--per-source", type=int, default=40, help="test films per source")
    ap.add_argument("--levels", nargs="+", default=list(LEVELS), choices=list(LEVELS))
    ap.add_argument("--no-lpips", action="store_true")
    ap.add_argument("--no-classical", action="store_true",
                    help="only the noisy film and the --checkpoint/--baseline methods (e.g. to score a new baseline run)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("runs/bench_cxr_denoise"))
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    methods = {"noisy": lambda y: y}
    if not a.no_classical:
        methods.update({"median 3x3": median_filter, "NLM": nl_means, "median + NLM": lambda y: nl_means(median_filter(y))})
        if (b := bm3d_or_none()) is not None:
            methods["BM3D"] = b
    for spec in a.checkpoint:
        name, _, path = spec.rpartition("=")
        methods[name or path] = model_restorer(path)
    for spec in a.baseline:
        name, _, path = spec.rpartition("=")
        methods[name or path] = baseline_restorer(path)
    if a.fid:
        from meddiff.metrics.fid import fid_from_features, inception_features, kid_from_features
    films = test_films(a.data, a.per_source)
    a.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for source, paths in films.items():
        if a.fid:
            clean_feats = np.concatenate([inception_features(read_film(p)[None], value_range=(-1.0, 1.0)) for p in paths])
        for level in a.levels:
            feats: dict[str, list[np.ndarray]] = {m: [] for m in methods}
            scores: dict[str, dict[str, list[float]]] = {m: {"psnr": [], "ssim": [], "lpips": [], "s": []} for m in methods}
            for i, path in enumerate(paths):
                x0 = read_film(path)
                y = degrade(x0, level, seed=i)
                for m, fn in methods.items():
                    t = time.perf_counter()
                    pred = np.clip(fn(y), -1, 1).astype(np.float32)
                    scores[m]["s"].append(time.perf_counter() - t)
                    scores[m]["psnr"].append(float(psnr(pred, x0, 2.0)))
                    scores[m]["ssim"].append(float(ssim(pred, x0, 2.0)))
                    if a.fid:
                        feats[m].append(inception_features(pred[None], value_range=(-1.0, 1.0)))
                    if not a.no_lpips:
                        scores[m]["lpips"].append(float(lpips_distance(pred[None, None], x0[None, None])))
            for m, sc in scores.items():
                row = {"source": source, "level": level, "method": m, "n": len(paths),
                       "s_per_film": float(np.mean(sc["s"]))}
                for k in ("psnr", "ssim", "lpips"):
                    if sc[k]:
                        ci = bootstrap_ci(sc[k])
                        row[k] = ci.mean
                        row[k + "_ci"] = f"[{ci.lo:.3f}, {ci.hi:.3f}]"
                if a.fid:
                    f_gen = np.concatenate(feats[m])
                    row["fid"] = float(fid_from_features(f_gen, clean_feats))
                    row["kid"], row["kid_std"] = (float(v) for v in kid_from_features(
                        f_gen, clean_feats, subsets=100, subset_size=len(paths), seed=0))
                rows.append(row)
                print(f"{source:20s} {level:14s} {m:22s} PSNR {row['psnr']:6.2f} SSIM {row['ssim']:.4f}"
                      + (f" LPIPS {row['lpips']:.4f}" if "lpips" in row else "")
                      + (f" FID {row['fid']:.1f} KID {row['kid']:.4f}" if "fid" in row else ""), flush=True)
    keys = sorted({k for r in rows for k in r}, key=lambda k: list(rows[0]).index(k) if k in rows[0] else 99)
    with open(a.out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    with open(a.out / "results.md", "w") as f:
        for source in films:
            f.write(f"\n### {source}, n = {len(films[source])} held-out films\n\n")
            fid_head, fid_rule = (" FID | KID |", "---:|---:|") if a.fid else ("", "")
            f.write(f"| level | method | PSNR (dB) | SSIM | LPIPS |{fid_head} s / film |\n|---|---|---:|---:|---:|{fid_rule}---:|\n")
            for r in rows:
                if r["source"] == source:
                    lp = f"{r['lpips']:.4f}" if "lpips" in r else ""
                    fk = f" {r['fid']:.1f} | {r['kid']:.4f} |" if "fid" in r else ""
                    f.write(f"| {r['level']} | {r['method']} | {r['psnr']:.2f} {r['psnr_ci']} | {r['ssim']:.4f} | {lp} |{fk} {r['s_per_film']:.2f} |\n")
    print(f"wrote {a.out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
