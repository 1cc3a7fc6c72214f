"""The demo of `meddiff demo` as a library function: super-resolution of held-out real MRI slices
(Colin27, a person the shipped model never saw: it learned from the MNI152 template only) with a report.

    from meddiff.evaluation.demo import DemoRequest, sr_demo
    result = sr_demo(DemoRequest(out=Path("runs/demo"), samples=4))   # result.report: report.html

The low-resolution inputs are made by the Med-cDiff degradation (anti-aliased x4 downsampling); the
report compares bilinear, bicubic, one meddiff sample and the mean of several samples against the
ground truth, with error maps, the per-pixel standard deviation over the samples, the uncertainty
calibration and the metrics table. The sampler is the checkpoint's stored one unless the request
overrides it (meddiff.samplers.registry.resolve).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import FieldError

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "checkpoints" / "demo_sr_x4.safetensors"


@dataclass(frozen=True)
class DemoRequest:
    """What `meddiff demo` (super-resolution) runs: the output folder, the model (None: the shipped
    demo_sr_x4), the number of held-out slices and samples per slice, the sampler settings (None: the
    checkpoint's), data consistency (none | project), seed, device, progress bar, overwrite."""

    out: Path = Path("runs/demo")
    checkpoint: str | Path | None = None
    slices: int = 8
    samples: int = 4
    sampler: str | None = None
    steps: int | None = None
    eta: float | None = None
    grid: str | None = None
    precision: str | None = None
    consistency: str = "none"
    seed: int = 0
    device: torch.device | str = "cpu"
    progress: bool = True
    overwrite: bool = False


@dataclass(frozen=True)
class DemoResult:
    """The report written (report.html), the metrics table (Markdown), the calibration table ('' if none), seconds."""

    report: Path
    table_md: str
    calibration_md: str
    seconds: float


def std_figure(stds: list[np.ndarray], path: Path) -> Path:
    """A row of per-pixel std maps (in [-1,1] units) with one shared colour bar, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io.atomic import atomic_path

    vmax = float(np.percentile(np.stack(stds), 99.5)) or 1e-6
    fig, axes = plt.subplots(1, len(stds), figsize=(1.6 * len(stds) + 0.8, 1.9), squeeze=False)
    for ax, s in zip(axes[0], stds):
        im = ax.imshow(s, cmap="magma", vmin=0, vmax=vmax)
        ax.axis("off")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="std ([-1,1] units)")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path


CALIBRATION_LABELS = {
    "pearson": "Pearson r(std, |err|)", "spearman": "Spearman", "rmse": "RMSE of the mean",
    "rmv": "predicted std (RMV)", "ratio": "RMSE / std (1 = calibrated)", "ece": "ECE", "ause": "AUSE",
    "ause_random": "AUSE random ranking",
}


def uncertainty_calibration(samples: torch.Tensor, x0: torch.Tensor, out: Path) -> str:
    """Does the per-pixel std of the samples predict the error of their mean? (brain foreground only)

    Writes calibration.md/.csv and calibration.png; returns the Markdown. With 4 or more samples
    the binned curve also uses a std from an independent half of the samples, since binning by the
    same noisy std that is evaluated bends the curve (meddiff.metrics.calibration).
    """
    from ..io.atomic import atomic_write_text
    from ..metrics.calibration import calibration, calibration_figure

    s = samples.shape[0]
    mean = samples.mean(0)
    fg = x0 > -0.99  # the prepared background is exactly -1: a mask that does not depend on the error
    cal = calibration(samples.std(0), mean - x0, fg, samples=s)
    figs = {f"std of {s} samples": cal}
    if s >= 4:
        h = s // 2
        figs["binned by an independent half"] = calibration(samples[h:].std(0), mean - x0, fg, samples=s,
                                                           bin_std=samples[:h].std(0))
    calibration_figure(figs, out / "calibration.png")
    rows = {name: r.to_row() for name, r in figs.items()}
    keys = [k for k in CALIBRATION_LABELS if k in next(iter(rows.values()))]
    lines = ["| std from | pixels | " + " | ".join(CALIBRATION_LABELS[k] for k in keys) + " |",
             "|---|---:|" + "---:|" * len(keys)]
    for name, row in rows.items():
        lines.append(f"| {name} | {row['pixels']} | " + " | ".join(format(float(row[k]), ".4g") for k in keys) + " |")
    md = "\n".join(lines) + "\n"
    atomic_write_text(out / "calibration.md", md)
    atomic_write_text(out / "calibration.csv", "method,pixels," + ",".join(keys) + "\n" + "".join(
        f"{name},{row['pixels']}," + ",".join(repr(float(row[k])) for k in keys) + "\n" for name, row in rows.items()))
    return md, float(cal.ratio)


FOOTNOTES = [
    "PSNR = 10 log10(R² / MSE) with R the full intensity range of the image (2 on the [-1, 1] scale the model works on); "
    "SSIM as Wang et al. 2004 with the same R.",
    "Sharpness (accutance) = 1000 · mean squared Sobel gradient / R² (meddiff.metrics.image.accutance); "
    "gradient ratio = accutance / accutance of the truth.",
    "Agreement with the measurement = RMS of clamp(A x) − y, where A is the anti-aliased downsampling that made the "
    "low-resolution input y from the truth.",
    "Uncertainty calibration: predicted error of the mean = std of the S samples · sqrt(1 + 1/S); RMSE / predicted error "
    "> 1 means overconfident; AUSE = area between the sparsification curve and its oracle (lower is better).",
]


def plain_notes(n: int, factor: float, lr_shape, sampler: str, steps: int, samples: int, seed: int, seconds: float,
                device, cons: dict[str, float]) -> list[str]:
    """The report's notes in plain words (the formulas are the FOOTNOTES)."""
    better = "closer to" if cons["meddiff sample"] <= cons["bicubic"] else "further from"
    return [
        f"What was tested: {n} slices of Colin27, a brain MRI of one person the model never saw (it learned from the "
        f"MNI152 template only). Each slice was shrunk {factor:g} times (to {lr_shape[0]} x {lr_shape[1]} pixels) and the model "
        "was asked to restore the full size; the original slice is the truth it is compared with.",
        f"How: {sampler} sampler, {steps} steps, {samples} sample(s) per slice, seed {seed}; {seconds:.0f} s on {device}.",
        "Higher PSNR and SSIM mean closer to the truth [1]; a gradient ratio near 1 means as sharp as the truth [2].",
        f"Shrinking the meddiff result again gives an image {better} the measured low-resolution input than "
        f"shrinking the bicubic one ({cons['meddiff sample']:.2e} vs {cons['bicubic']:.2e}) [3].",
    ]


def sr_demo(req: DemoRequest) -> DemoResult:
    """Run the super-resolution demo of `req` (module docstring) and write its report under req.out."""
    from ..baselines.interpolation import interpolate_baseline
    from ..checkpointing.named import resolve_checkpoint
    from ..data.degrade import SuperResolution
    from ..diffusion.checkpoint import load_model
    from ..samplers.run import sample_slices, summarise
    from ..io.outdir import check_output_dir, mark
    from ..metrics.compare import evaluate_arrays
    from ..metrics.table import write_table
    from ..samplers.consistency import measurement_for
    from ..samplers.registry import SamplingDefaults, resolve

    device = req.device
    t0 = time.perf_counter()
    checkpoint = resolve_checkpoint(req.checkpoint or DEFAULT_CHECKPOINT)  # a model name -> its file
    out: Path = req.out
    check_output_dir(out, [checkpoint], overwrite=req.overwrite, verb="demo")
    cfg, net, denoiser = load_model(checkpoint, expect_task="sr", device=device, precision=req.precision)
    spec = resolve(SamplingDefaults.of_ddpm(cfg), sampler=req.sampler, steps=req.steps, eta=req.eta, grid=req.grid,
                   precision=req.precision, samples=req.samples, consistency=req.consistency)
    if req.slices < 1:
        raise FieldError("slices", req.slices, "expected >= 1")

    mark(out, "demo")  # checks passed: the first write
    prep, idx, rows, x0 = _held_out_slices(req, out, cfg.data.size)
    deg = SuperResolution(cfg.task.sr_factor, cfg.task.sr_upsample)
    lr = deg.downsample(x0)
    bicubic = interpolate_baseline(lr, x0.shape[-2:], "bicubic")
    bilinear = interpolate_baseline(lr, x0.shape[-2:], "bilinear")
    cond = deg.upsample(lr, tuple(x0.shape[-2:]))
    t_sample = time.perf_counter()
    consistency = (measurement_for("sr", "project", cond, factor=cfg.task.sr_factor, lowres=lr)
                   if req.consistency == "project" else None)
    samples = sample_slices(denoiser, deg.model_condition(cond, torch.ones_like(cond)), spec, seed=req.seed,
                            batch_size=cfg.sampler.batch_size, device=device, progress=req.progress,
                            consistency=consistency)
    t_sample = time.perf_counter() - t_sample
    mean, std = summarise(samples)

    def arrays(t: torch.Tensor) -> list[np.ndarray]:
        return [a[0] for a in t.numpy()]

    methods = {"bilinear": arrays(bilinear), "bicubic": arrays(bicubic), "meddiff (1 sample)": arrays(samples[0])}
    if req.samples > 1:
        methods[f"meddiff (mean of {req.samples})"] = arrays(mean)
    table = evaluate_arrays(methods, arrays(x0), data_range=2.0)
    from ..samplers.consistency import sr_consistency_error

    cons = {name: float(sr_consistency_error(img, lr).mean()) for name, img in
            (("bicubic", bicubic), ("meddiff sample", samples[0]))}
    notes = _table_notes(req, spec, cfg.task.sr_factor, len(idx), tuple(lr.shape[-2:]), t_sample, cons)
    md = write_table(table, out / "results.md", out / "results.csv", notes=notes)
    notes = plain_notes(len(idx), cfg.task.sr_factor, lr.shape[-2:], spec.name, spec.steps, req.samples, req.seed,
                        t_sample, device, cons)  # the HTML report's: plain words, formulas in its footnotes
    images = _image_rows(req, lr, bicubic, samples, mean, x0)
    extra, cal_md = _uncertainty(req, samples, std, x0, out, notes)
    report = _write_report(out, prep, idx, rows, images, std, req.samples, table, notes, extra)
    return DemoResult(report, md, cal_md, time.perf_counter() - t0)


def _held_out_slices(req: DemoRequest, out: Path, size: int):
    """(the prepared Colin27 folder, the indices of req.slices evenly spaced test slices, their manifest rows,
    x0 [N, 1, size, size] in [-1, 1]); Colin27 is prepared under `out` once (prepared_colin27/)."""
    from ..data.dataset import load_prepared
    from ..data.prepare import PrepareOptions, prepare
    from ..data.samples import samples_dir

    prepared_dir = out / "prepared_colin27"
    if not (prepared_dir / "manifest.csv").is_file():
        prepare(samples_dir("colin27"), prepared_dir, PrepareOptions(split=(0.0, 0.0, 1.0), size=size, overwrite=True),
                progress=req.progress)
    prep = load_prepared(prepared_dir)
    test = prep.arrays["test"]
    idx = np.linspace(0, len(test) - 1, min(req.slices, len(test))).round().astype(int)
    rows = [prep.rows["test"][i] for i in idx]
    x0 = torch.from_numpy(np.asarray(test[idx], dtype=np.float32))[:, None]
    return prep, idx, rows, x0


def _table_notes(req: DemoRequest, spec, factor: float, n: int, lr_size: tuple[int, ...], t_sample: float,
                 cons: dict[str, float]) -> list[str]:
    """The notes under results.md: the data, the sampler and its cost, consistency, how accutance is computed."""
    sampler, steps, eta = spec.name, spec.steps, spec.eta
    grid_note = f" on the {spec.grid} grid" if "grid" in spec.entry.options else ""
    n_calls = req.samples * n * steps
    return [
        f"Held-out data: {n} slices of Colin27 (one person; the model was trained on the MNI152 template only), "
        f"x{factor:g} anti-aliased downsampling to {lr_size}, metrics on the [-1,1] scale (data range 2).",
        f"meddiff: {sampler} sampler{f' (eta {eta:g})' if sampler == 'ddim' else ''}"
        f"{grid_note}, {steps} steps, {req.samples} sample(s) per slice, seed {req.seed}; "
        f"{t_sample:.0f} s for {n_calls} slice-steps on {req.device}.",
        f"Consistency with the measurement (RMS of clamp(A x) - y, A = the x{factor:g} anti-aliased downsampling; "
        f"data consistency {req.consistency}): bicubic {cons['bicubic']:.2e}, meddiff sample {cons['meddiff sample']:.2e}.",
        "accutance = 1000 * mean squared Sobel gradient / range^2 (meddiff.metrics.image.accutance); "
        "gradient_ratio = accutance / accutance of the ground truth (1 = as sharp as the truth).",
    ]


def _image_rows(req: DemoRequest, lr, bicubic, samples, mean, x0) -> list[dict[str, np.ndarray]]:
    """One row of the report's grid per slice ([-1, 1]): low-res (nearest), bicubic, a sample, the mean, the truth."""
    from ..baselines.interpolation import interpolate_baseline

    return [
        {"low-res (x4)": interpolate_baseline(lr[i : i + 1], x0.shape[-2:], "nearest")[0, 0].numpy(),
         "bicubic": bicubic[i, 0].numpy(), "meddiff sample": samples[0, i, 0].numpy(),
         **({f"meddiff mean of {req.samples}": mean[i, 0].numpy()} if req.samples > 1 else {}),
         "truth": x0[i, 0].numpy()}
        for i in range(len(x0))
    ]


def _uncertainty(req: DemoRequest, samples, std, x0, out: Path, notes: list[str]) -> tuple[dict[str, Path], str]:
    """With several samples: std_maps.png and the calibration (calibration.md, calibration.png), a note on it
    appended to `notes`; returns (extra report images, calibration.md's table or "")."""
    extra: dict[str, Path] = {}
    cal_md = ""
    if req.samples > 1:
        std_figure([s[0].numpy() for s in std], out / "std_maps.png")  # also shown in the grid, at full size
        if float(std.max()) == 0.0:
            notes.append("All samples are identical (zero std everywhere): no uncertainty calibration to measure.")
        else:
            cal_md, ratio = uncertainty_calibration(samples, x0, out)
            extra["Uncertainty calibration: error against predicted std, sparsification"] = out / "calibration.png"
            notes.append(f"How far to trust the uncertainty map: on the brain, the real error is {ratio:.1f} times what the "
                         "spread of the samples predicts" + (" (the map is overconfident: read it as a lower bound of "
                         "the error)" if ratio > 1.2 else "") + "; calibration.md has the details [4].")
    return extra, cal_md


def _write_report(out: Path, prep, idx, rows, images, std, n_samples: int, table, notes, extra) -> Path:
    """report.html: the grid in Colin27's own units (one patient: one map back), the std maps beside the error
    they should predict, the table and notes."""
    from ..metrics.report import write_html_report

    norm = prep.normalisation_of("test", int(idx[0]))  # Colin27 is one patient: one map back to its own units
    images = [{k: norm.inverse(v) for k, v in row.items()} for row in images]
    stds = ([{f"meddiff mean of {n_samples}": std[i, 0].numpy() * norm.scale()} for i in range(len(idx))]
            if n_samples > 1 else None)  # per-pixel std of the samples, beside the error it should predict
    return write_html_report(
        out / "report.html", title="meddiff demo: MRI super-resolution x4 on a held-out brain", rows_of_images=images,
        row_labels=[f"{r['source'].split('/')[-1]} slice {r['slice_index']}" for r in rows],
        table_rows=table, notes=notes, extra_images=extra, footnotes=FOOTNOTES, std_maps=stds,
        window=(norm.lo, norm.hi), units=f"{norm.units} MR signal units of the Colin27 file",
    )
