"""Super-resolution on real images the models never saw, reported per source (issues 13, 23).

    python benchmarks/generalization.py --checkpoint shipped=src/meddiff/checkpoints/demo_sr_x4.safetensors \\
        [--checkpoint general=runs/sr_x4_general] [--sources colin27_t1 epi_t2star ...] [--slices 12] \\
        [--steps 10] [--kernel bicubic kspace_none pf58_homodyne ...] [--factor 2 4] [--noise 0.02] \\
        [--through-plane] [--out runs/generalization]

Cases (issue 23): every --kernel at every --factor. Kernels: ``bicubic`` (Med-cDiff's anti-aliased
bicubic), ``kspace`` (the legacy uncentred truncation of v1), and the acquisition kernels of
meddiff.data.acquisition (k-space truncation with apodisation, partial Fourier 5/8, zero-filled
interpolation x2 as consoles deliver, area, Gaussian PSF), with ``--noise`` sigma of complex k-space
noise (Rician floor; the k-space kernels only, seed 0). Two classical baselines: ``bicubic``
(interpolation of the delivered image, the model condition) and ``zero-filled`` (its band-limited
sinc interpolation, meddiff.data.acquisition.sinc_upsample); differences are to bicubic.

Held-out sources: benchmarks/heldout.py (Colin27 T1, a real EPI T2*, a T2 spin echo, a
multi-frame MR, a T1 shoulder, a GRE abdomen, two CTs; all real, none used in training).
Degradation: the truth x [-1, 1] is downsampled x4 with Med-cDiff's anti-aliased bicubic
(``--kernel kspace``: central k-space truncation, as an MRI scanner acquires); the condition is
its bicubic upsampling (= the bicubic method). Each checkpoint restores the condition with its
own sampler (DPM-Solver++ 10 steps for the shipped models), seed 0, one sample per image.

Per source and method: PSNR, SSIM (data range 2) and LPIPS (shift-tolerant AlexNet) as the mean
over images with a bootstrap 95% CI over images, and the paired difference to bicubic (mean, CI).
``--through-plane``: for the sources with a volume, every slice of the stack is restored and the
through-plane error is RMS((R[z+1] - R[z]) - (T[z+1] - T[z])) over the stack, relative to
bicubic's (1 = as coherent as bicubic; above 1 = detail that changes from slice to slice more
than the truth does, e.g. invented texture). Domain check (meddiff.domain, as `meddiff sample`
runs it): the median model score of the low-resolution inputs, the median consistency ratio of
the outputs, and how many images either flags (> 1). Writes OUT/generalization.{md,csv}.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from heldout import Source, all_sources  # noqa: E402

from meddiff.data.acquisition import ACQ_KERNELS, KSPACE_KERNELS, low_res, sinc_upsample  # noqa: E402
from meddiff.data.augment import kspace_truncate  # noqa: E402
from meddiff.data.degrade import SuperResolution  # noqa: E402
from meddiff.samplers.run import restore, sampler_options  # noqa: E402
from meddiff.io.atomic import atomic_write_text  # noqa: E402
from meddiff.metrics.image import psnr, ssim  # noqa: E402
from meddiff.metrics.stats import bootstrap_ci, paired_comparison  # noqa: E402
from meddiff.diffusion.checkpoint import load_model  # noqa: E402

FACTOR = 4.0


class Measured(NamedTuple):
    cond: torch.Tensor  # [1, 1, H, W]: the measurement upsampled back to full size (the model condition)
    lowres: torch.Tensor  # [1, 1, h, w]: the delivered measurement itself
    factor: float = FACTOR  # H / h of the delivered image (zip2 delivers twice the acquired matrix)


def condition(x: np.ndarray, kernel: str, factor: float = FACTOR, noise: float = 0.0, seed: int = 0) -> Measured:
    """Truth [H, W] -> its measurement by `kernel` at `factor` and the model condition (bicubic back to full size)."""
    sr = SuperResolution(factor)
    t = torch.from_numpy(x)[None, None]
    size = sr.low_res_size(t.shape[-2:])
    if kernel == "kspace":
        lr = kspace_truncate(t, size)
    elif kernel in ACQ_KERNELS:
        sigma = noise if kernel in KSPACE_KERNELS else 0.0
        lr = low_res((t.double() + 1) / 2, kernel, size, sigma, torch.Generator().manual_seed(seed)).float() * 2 - 1
    else:
        lr = sr.downsample(t)
    lr = lr.clamp(-1, 1)
    return Measured(sr.upsample(lr, t.shape[-2:]), lr, t.shape[-2] / lr.shape[-2])


def zero_filled(m: Measured) -> np.ndarray:
    """The band-limited (sinc) interpolation of the delivered image to the truth's grid."""
    return sinc_upsample(m.lowres.double(), (-2, -1), tuple(m.cond.shape[-2:]))[0, 0].clamp(-1, 1).float().numpy()


def restorer(path: str, steps: int | None, threads: int, consistency: str = "none", sampler: str | None = None):
    from meddiff.samplers.consistency import measurement_for

    cfg, _, denoiser = load_model(path, expect_task="sr")
    s = cfg.sampler
    name = sampler or s.name
    opts = sampler_options(name, cfg.diffusion.variance, s.eta, s.grid)

    context = cfg.task.context_slices  # a 2.5D model given one image: its neighbours are the image itself

    def run(measured: list[Measured]) -> list[np.ndarray]:
        from meddiff.data.volume_dataset import context_planes

        out = []
        for c, lowres, factor in measured:  # one by one: images differ in size
            m = None
            if consistency != "none":
                m = measurement_for("sr", consistency, c, factor=factor, lowres=lowres, resample=1)
            x = restore(denoiser, context_planes(c, context) if context else c, sampler=name, steps=steps or s.steps,
                        seed=0, batch_size=1, progress=False, consistency=m, **opts)
            out.append(x[0, 0, 0].numpy())
        return out

    run.denoiser = denoiser  # type: ignore[attr-defined]
    run.context = context  # type: ignore[attr-defined]
    from meddiff.checkpointing import resolve_model_file
    from meddiff.domain import read_card

    run.card = read_card(resolve_model_file(path))  # type: ignore[attr-defined]
    return run


def domain_flags(run, src: Source, measured: list[Measured], preds: list[np.ndarray]) -> tuple[float, float, int]:
    """(median model score of the low-resolution inputs, median consistency ratio, images flagged)
    as `meddiff sample` computes them (meddiff.domain; with the model's card when it has one: the
    source's modality, MR or CT, and the intensity histogram too; pixel spacing is not checked here)."""
    from meddiff.domain import SCORE_LIMIT, check_input, consistency_ratio

    lows = [m.lowres for m in measured]
    modality = "CT" if src.contrast == "CT" else "MR"
    reports = [check_input(src.name, m.lowres, modality, None, m.factor, run.denoiser, run.card,
                           score=min(m.lowres.shape[-2:]) >= 32 and not run.context) for m in measured]
    score = [r.score if r.score is not None else float("nan") for r in reports]
    cons = [consistency_ratio(torch.from_numpy(p)[None, None], m.lowres, m.factor) for p, m in zip(preds, measured)]
    flagged = sum(bool(r.reasons) or b > SCORE_LIMIT for r, b in zip(reports, cons))
    return float(np.nanmedian(score)) if not all(np.isnan(score)) else float("nan"), float(np.median(cons)), flagged


def scores(preds: list[np.ndarray], truths: list[np.ndarray]) -> dict[str, list[float]]:
    from meddiff.metrics.lpips import lpips_distance

    out: dict[str, list[float]] = {"psnr": [], "ssim": [], "lpips": []}
    for p, t in zip(preds, truths):
        p = np.clip(p, -1, 1)
        out["psnr"].append(float(psnr(p, t, data_range=2.0)))
        out["ssim"].append(float(ssim(p, t, data_range=2.0)))
        out["lpips"].append(float(lpips_distance(p, t)[0]) if min(t.shape) >= 32 else float("nan"))
    return out


def through_plane_error(restored: np.ndarray, truth: np.ndarray) -> float:
    """RMS of the slice-to-slice difference of `restored` [Z, H, W] against the truth's."""
    return float(np.sqrt(np.mean((np.diff(restored, axis=0) - np.diff(truth, axis=0)) ** 2)))


def fmt_ci(c) -> str:
    return f"{c.mean:.3f} [{c.lo:.3f}, {c.hi:.3f}]" if c.n_images > 1 else f"{c.mean:.3f}"


def source_rows(src: Source, methods: dict, kernel: str, through: bool, factor: float = FACTOR,
                noise: float = 0.0, domain: bool = True) -> list[dict[str, object]]:
    conds = [condition(x, kernel, factor, noise, seed=i) for i, x in enumerate(src.images)]
    preds = {"bicubic": [m.cond[0, 0].numpy() for m in conds], "zero-filled": [zero_filled(m) for m in conds]}
    secs = {"bicubic": 0.0, "zero-filled": 0.0}
    for name, run in methods.items():
        t0 = time.perf_counter()
        preds[name] = run(conds)
        secs[name] = (time.perf_counter() - t0) / len(conds)
    sc = {m: scores(p, src.images) for m, p in preds.items()}
    tpe = {}
    if through and src.volume is not None:
        vc = [condition(x, kernel, factor, noise, seed=i) for i, x in enumerate(src.volume)]
        ref = through_plane_error(np.stack([m.cond[0, 0].numpy() for m in vc]), src.volume)
        tpe = {"bicubic": 1.0, "zero-filled": through_plane_error(np.stack([zero_filled(m) for m in vc]), src.volume) / ref} | {m: through_plane_error(np.clip(np.stack(run(vc)), -1, 1), src.volume) / ref
                                  for m, run in methods.items()}
    rows = []
    for m in preds:
        case = kernel + (f"+noise{noise:g}" if noise > 0 and kernel in KSPACE_KERNELS else "")
        row: dict[str, object] = {"source": src.name, "contrast": src.contrast, "case": case, "factor": f"x{factor:g}",
                                  "method": m, "n": len(src.images),
                                  "s_per_image": round(secs[m], 2)}
        for k in ("psnr", "ssim", "lpips"):
            v = [x for x in sc[m][k] if np.isfinite(x)]
            row[k] = fmt_ci(bootstrap_ci(v)) if v else "n/a"
            if m != "bicubic" and v:
                d = paired_comparison(sc[m][k], sc["bicubic"][k]).diff if len(v) > 1 else None
                row[f"d_{k}"] = (f"{d.mean:+.3f} [{d.lo:+.3f}, {d.hi:+.3f}]" if d is not None
                                 else f"{sc[m][k][0] - sc['bicubic'][k][0]:+.3f}")
        row["through_plane"] = f"{tpe[m]:.3f}" if m in tpe else ""
        if m in methods and domain:
            sc_med, cons_med, flagged = domain_flags(methods[m], src, conds, preds[m])
            row["domain"] = f"{sc_med:.2f} / {cons_med:.2f} / {flagged} of {len(src.images)}"
        rows.append(row)
    return rows


COLUMNS = ("source", "contrast", "case", "factor", "method", "n", "psnr", "d_psnr", "ssim", "d_ssim", "lpips", "d_lpips", "through_plane",
           "domain", "s_per_image")


def markdown(rows: list[dict[str, object]], kernel: str) -> str:
    head = ("| source | contrast | case | factor | method | n | PSNR dB | Δ PSNR vs bicubic | SSIM | Δ SSIM | LPIPS ↓ | Δ LPIPS | "
            "through-plane error (bicubic = 1) | domain check: score / consistency / flagged | s/image |")
    lines = [f"Super-resolution ({kernel}) on held-out real images; mean [95% bootstrap CI over images].", "",
             head, "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH[@SAMPLER[:STEPS]]",
                   help="a model to score (repeatable); @SAMPLER[:STEPS] overrides its sampler, e.g. @posterior_mean, "
                        "@dpm_solver_pp:10")
    p.add_argument("--sources", nargs="*", default=None, help="subset of source names (default: all)")
    p.add_argument("--slices", type=int, default=12, help="images per volume source (default 12)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: each checkpoint's)")
    p.add_argument("--kernel", nargs="+", choices=("bicubic", "kspace") + ACQ_KERNELS, default=["bicubic"],
                   help="measurement kernels, one case each (meddiff.data.acquisition)")
    p.add_argument("--factor", nargs="+", type=float, default=[FACTOR], help="SR factors, one case each (default 4)")
    p.add_argument("--noise", type=float, default=0.0, help="k-space noise std of the k-space kernels (fraction of the range)")
    p.add_argument("--no-domain", action="store_true", help="skip the domain-check column (saves one model call per image)")
    p.add_argument("--through-plane", action="store_true", help="restore whole stacks for the through-plane error")
    p.add_argument("--consistency", choices=("none", "project"), default="none",
                   help="project: every sampler step projected onto the measurement (meddiff sample --consistency project)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("runs/generalization"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    methods = {}
    for spec in args.checkpoint:
        name, _, path = spec.partition("=")
        path, _, sampler = path.partition("@")
        sampler, _, steps = sampler.partition(":")
        if not path:
            p.error(f"--checkpoint {spec!r}: expected NAME=PATH[@SAMPLER[:STEPS]]")
        methods[name] = restorer(path, int(steps) if steps else args.steps, args.threads, args.consistency, sampler or None)
    sources = [s for s in all_sources(args.slices) if args.sources is None or s.name in args.sources]
    rows: list[dict[str, object]] = []
    for src in sources:
        for factor in args.factor:
            for kernel in args.kernel:
                t0 = time.perf_counter()
                rows += source_rows(src, methods, kernel, args.through_plane, factor, args.noise, not args.no_domain)
                print(f"{src.name} {kernel} x{factor:g}: {len(src.images)} images, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
                md = markdown(rows, ", ".join(args.kernel))
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out / "generalization.md", md)  # after every source: a partial table survives
    with open(args.out / "generalization.csv.tmp", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    Path(args.out / "generalization.csv.tmp").replace(args.out / "generalization.csv")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
