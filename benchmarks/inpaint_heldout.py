"""MR inpainting on real scans the models never saw, inside the holes, per source (issue 25).

    python benchmarks/inpaint_heldout.py --checkpoint inpaint_mr [--pix2pix runs/pix2pix_inpaint_mr] \\
        [--sources colin27_t1 epi_t2star mr_t2_se mr_emri] [--cases 12] [--coverages 0.1 0.3] \\
        [--sampler NAME --steps N] [--samples 4 --uncertainty-cases 6] [--segmenter] [--lesions 8] \\
        [--out runs/inpaint_heldout]

Sources (benchmarks/heldout.py; none used in training, which saw MNI152 2009a and synthetic images only):
Colin27 T1, a real EPI T2* (nibabel), a real T2 spin echo (pydicom MR_small) and a real multi-frame MR
(pydicom-data emri_small). Each source gives --cases (image, mask) pairs per coverage: its images, each
with ceil(cases / images) masks when it has fewer images than cases.

Masks (seeded by source, image, coverage and repeat): unions of boxes, free-form strokes and lesion-shaped
blobs (meddiff.data.masks, the training shapes) restricted to the head (the filled foreground x > -0.9),
covering c = 10% / 30% of the head (+-3 points; the closest of 50 draws). The model condition is the image
with the holes set to 0 and the mask, as in training; every method keeps the known pixels exactly.

Methods: the checkpoint with its own sampler (or --sampler/--steps), seed 0; biharmonic (scikit-image);
pix2pix (a learned baseline checkpoint, --pix2pix; its dropout noise seeded, one prediction).

Scores per source and coverage, mean [95% bootstrap CI over images; a single-image source resamples its
masks]: PSNR and SSIM inside the holes (data range 2; SSIM averaged over window centres in the holes),
LPIPS (shift-tolerant AlexNet) of the composite (known pixels exact, so every difference lies in the
holes), FID and KID between the composites and the truths (Inception-v3 pool3; with n = cases images the
FID is biased upwards and only comparable within a row; KID is unbiased), and the paired difference
model - biharmonic of PSNR and LPIPS. --segmenter: the shipped tissue segmenter's Dice (grey / white
matter) inside the holes between its labels of the composite and of the truth (T1 sources only).

--samples N (N >= 2): on --uncertainty-cases cases per source and coverage, N samples of the checkpoint;
inside the holes, the RMSE of their mean against the truth and the predicted error of the mean
(std * sqrt(1 + 1/N), times the model card's std scale when it has one; meddiff.metrics.calibration):
their ratio is 1 for a calibrated model (> 1 overconfident).

--lesions K (lesion filling, Colin27): K slices get a synthetic lesion (a lesion-shaped blob in the brain,
filled with a smooth hypo- or hyperintensity); the lesion, dilated by 1 pixel, is filled by each method
and segmented. Reported: the tissue Dice (GM/WM, segmenter labels of the clean slice as reference)
outside the lesion and inside it, for the lesioned, filled (each method) images.

Writes OUT/inpaint_heldout.md and OUT/inpaint_heldout.csv.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from heldout import Source, all_sources  # noqa: E402

from meddiff.io.atomic import atomic_write_text  # noqa: E402

SOURCES = ("colin27_t1", "epi_t2star", "mr_t2_se", "mr_emri")
KINDS = ("box", "stroke", "lesion")
T1_SOURCES = ("colin27_t1",)


# ------------------------------------------------------------------ masks
def head(x: np.ndarray) -> np.ndarray:
    """The head: pixels above the background, holes filled."""
    from scipy.ndimage import binary_fill_holes

    return binary_fill_holes(x > -0.9)


def heldout_mask(x: np.ndarray, coverage: float, seed: int, tol: float = 0.03, tries: int = 50) -> np.ndarray:
    """Holes (bool [H, W]) covering `coverage` of the head of x (+-tol, the closest of `tries` draws)."""
    from meddiff.data.masks import random_mask

    fg = head(x)
    frac = fg.mean()
    g = torch.Generator().manual_seed(seed)
    best, best_err = None, math.inf
    for _ in range(tries):
        lo, hi = max(1e-3, (coverage - tol) * frac), min(0.95, (coverage + tol) * frac * 1.3)
        m = random_mask(*x.shape, KINDS, (lo, hi), g).numpy() > 0
        m &= fg
        err = abs(m.sum() / max(fg.sum(), 1) - coverage)
        if err < best_err:
            best, best_err = m, err
        if err <= tol:
            break
    return best


def cases_of(src: Source, n_cases: int, coverage: float, index: int) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(image index, truth, holes) for n_cases cases of one source and coverage."""
    per = max(1, math.ceil(n_cases / len(src.images)))
    out = []
    for i, x in enumerate(src.images):
        for r in range(per):
            out.append((i, x, heldout_mask(x, coverage, seed=1_000_003 * index + 1009 * i + 17 * r + int(coverage * 1000))))
    return out[:n_cases] if len(src.images) >= n_cases else out


# ------------------------------------------------------------------ methods
def planes_of(x: np.ndarray, m: np.ndarray) -> torch.Tensor:
    t, mk = torch.from_numpy(x)[None, None], torch.from_numpy(m.astype(np.float32))[None, None]
    return torch.cat([t * (1 - mk), mk], dim=1)


def model_method(path: str, sampler: str | None, steps: int | None, consistency: str = "none", resample: int = 1):
    from meddiff.checkpointing import resolve_model_file
    from meddiff.diffusion.checkpoint import load_model
    from meddiff.domain import read_card
    from meddiff.samplers.run import restore, sampler_options
    from meddiff.checkpointing.named import resolve_checkpoint

    path = resolve_checkpoint(path)
    cfg, _, denoiser = load_model(path, expect_task="inpaint")
    s = cfg.sampler
    name = sampler or s.name
    n_steps = steps or s.steps
    opts = sampler_options(name, cfg.diffusion.variance, s.eta, s.grid)

    from meddiff.samplers.consistency import Measurement

    measured = None if consistency == "none" else Measurement("inpaint", consistency, resample=resample)

    def run(x: np.ndarray, m: np.ndarray, samples: int = 1, seed: int = 0) -> np.ndarray:
        out = restore(denoiser, planes_of(x, m), sampler=name, steps=n_steps, samples=samples, seed=seed, batch_size=1,
                      progress=False, consistency=measured, **opts)[:, 0, 0].clamp(-1, 1).numpy()  # [S, H, W]
        return np.where(m[None], out, x[None])

    card = read_card(resolve_model_file(path))
    run.describe = f"{name} {1 if name == 'posterior_mean' else n_steps}" + ("" if consistency == "none" else f", consistency {consistency}")  # type: ignore[attr-defined]
    run.card = card  # type: ignore[attr-defined]
    return run


def biharmonic_method():
    from meddiff.baselines.classical import biharmonic

    def run(x: np.ndarray, m: np.ndarray, samples: int = 1, seed: int = 0) -> np.ndarray:
        return np.where(m, np.clip(biharmonic(np.where(m, 0.0, x).astype(np.float32), m.astype(np.float32)), -1, 1), x)[None]

    return run


def pix2pix_method(path: str):
    from meddiff.baselines.registry import load_baseline, restore_baseline

    cfg, model = load_baseline(path)

    def run(x: np.ndarray, m: np.ndarray, samples: int = 1, seed: int = 0) -> np.ndarray:
        out = restore_baseline(model, planes_of(x, m), samples=samples, seed=seed, batch_size=1)[:, 0, 0].clamp(-1, 1).numpy()
        return np.where(m[None], out, x[None])

    return run


# ------------------------------------------------------------------ scores
def hole_scores(pred: np.ndarray, truth: np.ndarray, m: np.ndarray) -> dict[str, float]:
    from meddiff.metrics.image import psnr, ssim
    from meddiff.metrics.lpips import lpips_distance

    p, t = torch.from_numpy(pred)[None, None], torch.from_numpy(truth)[None, None]
    mk = torch.from_numpy(m)[None, None]
    try:
        s = float(np.ravel(ssim(p, t, 2.0, mk))[0])
    except Exception:  # holes only at the border: SSIM undefined
        s = float("nan")
    return {"psnr": float(np.ravel(psnr(p, t, 2.0, mk))[0]), "ssim": s, "lpips": float(lpips_distance(p, t)[0])}


def seg_dice_in(seg, a: np.ndarray, ref: np.ndarray, region: np.ndarray) -> float:
    """Mean Dice of grey and white matter between seg(a) and seg(ref), over the pixels of `region`."""
    la, lr = seg_labels(seg, a), seg_labels(seg, ref)
    ds = []
    for k in (1, 2):
        pa, pr = (la == k) & region, (lr == k) & region
        denom = pa.sum() + pr.sum()
        if denom:
            ds.append(2.0 * (pa & pr).sum() / denom)
    return float(np.mean(ds)) if ds else float("nan")


def seg_labels(seg, x: np.ndarray) -> np.ndarray:
    h, w = x.shape
    ph, pw = -h % 8, -w % 8
    t = torch.nn.functional.pad(torch.from_numpy(x)[None, None], (0, pw, 0, ph), value=-1.0)
    return seg(t)[0, :h, :w].numpy()


def fmt(c) -> str:
    return f"{c.mean:.3f} [{c.lo:.3f}, {c.hi:.3f}]" if abs(c.mean) < 10 else f"{c.mean:.2f} [{c.lo:.2f}, {c.hi:.2f}]"


def set_scores(preds: list[np.ndarray], truths: list[np.ndarray], clusters: list[int]) -> dict[str, str]:
    from meddiff.metrics.fid import fid_from_features, inception_features, kid_from_features
    from meddiff.metrics.stats import set_bootstrap

    fp = inception_features(np.stack(preds)[:, None])
    ft = inception_features(np.stack(truths)[:, None])
    fid = fid_from_features(fp, ft)
    kid = kid_from_features(fp, ft, subsets=50, subset_size=len(preds))
    kid = kid[0] if isinstance(kid, tuple) else kid
    b = set_bootstrap(fp, ft, clusters if len(set(clusters)) > 1 else None, fid=fid, n_resamples=200)
    return {"fid": f"{fid:.1f} [{b.fid_lo:.1f}, {b.fid_hi:.1f}]", "kid": f"{float(kid):.3f} [{b.kid_lo:.3f}, {b.kid_hi:.3f}]",
            "fid_value": fid}


# ------------------------------------------------------------------ lesion filling
def add_lesion(x: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(x with a synthetic lesion, lesion mask): a lesion-shaped blob inside the brain (eroded head),
    2-6% of the head, with a smooth hypo- or hyperintensity."""
    from scipy.ndimage import binary_erosion, gaussian_filter

    from meddiff.data.masks import random_mask

    g = torch.Generator().manual_seed(seed)
    brain = binary_erosion(head(x), iterations=max(3, x.shape[0] // 12))
    best = None
    for _ in range(50):
        m = (random_mask(*x.shape, ("lesion",), (0.01, 0.04), g).numpy() > 0)
        if (m & ~brain).sum() == 0 and m.sum() > 0:
            best = m
            break
        best = m & brain if best is None or (m & brain).sum() > best.sum() else best
    rng = np.random.default_rng(seed)
    level = rng.choice([-0.7, 0.8])
    tex = gaussian_filter(rng.standard_normal(x.shape), 2.0)
    tex = tex / (np.abs(tex).max() + 1e-8) * 0.1
    soft = gaussian_filter(best.astype(np.float64), 1.0)
    y = np.clip(x * (1 - soft) + (level + tex) * soft, -1, 1).astype(np.float32)
    return y, soft > 0.05


# ------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="an inpainting model (name, file or run folder)")
    p.add_argument("--pix2pix", default=None, help="a pix2pix inpainting checkpoint (objective baseline)")
    p.add_argument("--sources", nargs="*", default=list(SOURCES))
    p.add_argument("--cases", type=int, default=12, help="(image, mask) cases per source and coverage")
    p.add_argument("--coverages", type=float, nargs="*", default=[0.1, 0.3])
    p.add_argument("--sampler", default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--consistency", default="none", help="none | project | repaint (with --sampler ancestral)")
    p.add_argument("--resample", type=int, default=1, help="repaint: network calls per step")
    p.add_argument("--extra", action="append", default=[], metavar="NAME=SAMPLER:STEPS[:CONSISTENCY]",
                   help="another sampler of the same checkpoint as an extra method row (e.g. mean=posterior_mean:1)")
    p.add_argument("--samples", type=int, default=0, help="uncertainty: samples per case (0 = skip)")
    p.add_argument("--uncertainty-cases", type=int, default=6)
    p.add_argument("--segmenter", action="store_true", help="tissue Dice inside the holes (T1 sources)")
    p.add_argument("--lesions", type=int, default=0, help="lesion filling on this many Colin27 slices (0 = skip)")
    p.add_argument("--no-fid", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("runs/inpaint_heldout"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from meddiff.metrics.stats import bootstrap_ci, paired_comparison

    model = model_method(args.checkpoint, args.sampler, args.steps, args.consistency, args.resample)
    methods = {"meddiff": model}
    for spec in args.extra:
        label, rest = spec.split("=", 1)
        parts = rest.split(":")
        methods[label] = model_method(args.checkpoint, parts[0], int(parts[1]), parts[2] if len(parts) > 2 else "none")
    methods["biharmonic"] = biharmonic_method()
    if args.pix2pix:
        methods["pix2pix"] = pix2pix_method(args.pix2pix)
    seg = None
    if args.segmenter or args.lesions:
        from meddiff.downstream.models import Segmenter

        seg = Segmenter.load()
    sources = [s for s in all_sources(12) if s.name in args.sources]
    rows, unc_rows, lines = [], [], []
    t0 = time.time()
    for si, src in enumerate(sources):
        for cov in args.coverages:
            cases = cases_of(src, args.cases, cov, si)
            clusters = [i for i, _, _ in cases] if len(src.images) > 1 else list(range(len(cases)))
            per: dict[str, dict[str, list[float]]] = {}
            comps: dict[str, list[np.ndarray]] = {}
            for name, fn in methods.items():
                vals: dict[str, list[float]] = {"psnr": [], "ssim": [], "lpips": [], "dice": []}
                comps[name] = []
                for _, x, m in cases:
                    pred = fn(x, m)[0].astype(np.float32)
                    comps[name].append(pred)
                    for k, v in hole_scores(pred, x, m).items():
                        vals[k].append(v)
                    if seg is not None and src.name in T1_SOURCES:
                        vals["dice"].append(seg_dice_in(seg, pred, x, m))
                per[name] = vals
            cover = np.mean([m.sum() / head(x).sum() for _, x, m in cases])
            truths = [x for _, x, _ in cases]
            for name, vals in per.items():
                row = {"source": src.name, "coverage": cov, "measured_coverage": round(float(cover), 3), "method": name,
                       "n": len(cases), "images": len(set(clusters)) if len(src.images) > 1 else 1}
                for k in ("psnr", "ssim", "lpips", "dice"):
                    v = [a for a in vals[k] if not math.isnan(a)]
                    row[k] = fmt(bootstrap_ci(v, [c for c, a in zip(clusters, vals[k]) if not math.isnan(a)])) if v else ""
                    row[k + "_mean"] = float(np.mean(v)) if v else float("nan")
                if not args.no_fid:
                    row.update(set_scores(comps[name], truths, clusters))
                if name != "meddiff":
                    for k in ("psnr", "lpips"):
                        d = paired_comparison(per["meddiff"][k], vals[k], clusters)
                        row[f"meddiff_minus_{k}"] = fmt(d.diff)
                rows.append(row)
                print(f"[{time.time() - t0:6.0f}s] {src.name} {cov:.0%} {name}: PSNR {row['psnr']}  LPIPS {row['lpips']}  "
                      f"FID {row.get('fid', '')}", flush=True)
            if args.samples >= 2:
                unc_rows.append(uncertainty_row(model, src.name, cov, cases[: args.uncertainty_cases], args.samples))
                print(f"[{time.time() - t0:6.0f}s] uncertainty {unc_rows[-1]}", flush=True)
    lesion_rows = lesion_filling(methods, seg, args.lesions) if args.lesions else []
    write(args, model, rows, unc_rows, lesion_rows)
    return 0


def uncertainty_row(model, source: str, cov: float, cases, samples: int) -> dict[str, object]:
    from meddiff.metrics.calibration import calibration

    stds, errs = [], []
    for _, x, m in cases:
        out = model(x, m, samples=samples, seed=11)
        mean, std = out.mean(0), out.std(0, ddof=1)
        stds.append(std[m]), errs.append((mean - x)[m])
    std, err = np.concatenate(stds), np.concatenate(errs)
    scale = float(model.card.std_scale) if model.card is not None and model.card.std_scale else 1.0
    raw = calibration(std, err, None, samples=samples)
    cal = calibration(std * scale, err, None, samples=samples)
    return {"source": source, "coverage": cov, "cases": len(cases), "samples": samples, "rmse": round(cal.rmse, 4),
            "predicted": round(cal.rmv, 4), "ratio_raw": round(raw.ratio, 3), "std_scale": round(scale, 3),
            "ratio": round(cal.ratio, 3), "spearman": round(cal.spearman, 3)}


def lesion_filling(methods, seg, k: int) -> list[dict[str, object]]:
    from heldout import colin27

    from meddiff.metrics.stats import bootstrap_ci

    src = colin27(k)
    res: dict[str, dict[str, list[float]]] = {}
    for i, x in enumerate(src.images):
        y, les = add_lesion(x, 500 + i)
        from scipy.ndimage import binary_dilation

        hole = binary_dilation(les, iterations=1)
        outside, inside = head(x) & ~hole, hole
        variants = {"lesioned (not filled)": y, **{f"filled: {n}": fn(y, hole)[0] for n, fn in methods.items()}}
        for name, img in variants.items():
            r = res.setdefault(name, {"outside": [], "inside": []})
            r["outside"].append(seg_dice_in(seg, img, x, outside))
            r["inside"].append(seg_dice_in(seg, img, x, inside))
    return [{"image": name, "dice_outside": fmt(bootstrap_ci(v["outside"])), "dice_inside": fmt(bootstrap_ci(v["inside"])),
             "n": len(v["outside"])} for name, v in res.items()]


def write(args, model, rows, unc_rows, lesion_rows) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    keys = ["source", "coverage", "measured_coverage", "method", "n", "images", "psnr", "ssim", "lpips", "fid", "kid", "dice",
            "meddiff_minus_psnr", "meddiff_minus_lpips"]
    md = [f"Checkpoint {args.checkpoint} ({model.describe}); pix2pix {args.pix2pix or '-'}; command: "
          f"`python benchmarks/inpaint_heldout.py {' '.join(sys.argv[1:])}`", ""]
    md.append("| source | holes | method | PSNR in holes (dB) | SSIM in holes | LPIPS | FID | KID | Dice in holes | meddiff - this method: PSNR | meddiff - this method: LPIPS |")
    md.append("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        md.append(f"| {r['source']} | {r['coverage']:.0%} (measured {r['measured_coverage']:.0%}, n={r['n']}) | {r['method']} | {r['psnr']} | "
                  f"{r['ssim']} | {r['lpips']} | {r.get('fid', '')} | {r.get('kid', '')} | {r['dice']} | "
                  f"{r.get('meddiff_minus_psnr', '')} | {r.get('meddiff_minus_lpips', '')} |")
    if unc_rows:
        md += ["", "Uncertainty inside the holes (RMSE of the mean of N samples / predicted error; 1 = calibrated):", "",
               "| source | holes | cases | N | RMSE | predicted | ratio (raw std) | std scale | ratio | Spearman |",
               "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        md += [f"| {u['source']} | {u['coverage']:.0%} | {u['cases']} | {u['samples']} | {u['rmse']} | {u['predicted']} | "
               f"{u['ratio_raw']} | {u['std_scale']} | {u['ratio']} | {u['spearman']} |" for u in unc_rows]
    if lesion_rows:
        md += ["", "Lesion filling (Colin27, synthetic lesions; tissue Dice against the clean slice's segmentation):", "",
               "| image | Dice outside the lesion | Dice inside the lesion | n |", "|---|---:|---:|---:|"]
        md += [f"| {r['image']} | {r['dice_outside']} | {r['dice_inside']} | {r['n']} |" for r in lesion_rows]
    atomic_write_text(args.out / "inpaint_heldout.md", "\n".join(md) + "\n")
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(args.out / "inpaint_heldout.csv", buf.getvalue())
    print("\n".join(md))


if __name__ == "__main__":
    sys.exit(main())
