"""The demo of `meddiff demo` as a library function: super-resolution of held-out real MRI slices
(Colin27, a person no shipped model saw: they learned from the MNI152 template and synthetic images) with a report.

    from meddiff.evaluation.demo import DemoRequest, sr_demo
    result = sr_demo(DemoRequest(out=Path("runs/demo")))   # result.report: report.html

The model is the one models.yaml marks `recommended: true` for super-resolution x4 (default_checkpoint:
sr_x4_general, whose default is the one-call posterior mean) unless the request names another, e.g.
checkpoint="demo_sr_x4" (sampled with DPM-Solver++). The low-resolution inputs are made by the Med-cDiff
degradation (anti-aliased x4 downsampling); the report compares bilinear, bicubic and meddiff (the
posterior mean, or one sample and the mean of several) against the ground truth, with error maps and
the metrics table, and says how far to trust the uncertainty on these held-out slices:

- a model with a stored interval calibration for the sampler run (`meddiff sample --interval 0.9`;
  meddiff.uncertainty): the 90% lower / upper maps and their width, the calibrated predicted error
  beside the real one, coverage inside the anatomy and the reliability diagram by deciles of
  predicted error (meddiff.uncertainty.evaluate);
- several samples: the per-pixel std over the samples, its calibration (meddiff.metrics.calibration),
  and the same reliability diagram and coverage for mean ± 1.645 x the spread's predicted error, a
  Gaussian reading that nothing calibrated.

The sampler is the checkpoint's stored one unless the request overrides it (meddiff.samplers.registry.resolve).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError, FieldError
from ..baselines.interpolation import interpolate_baseline
from ..checkpointing import resolve_model_file
from ..checkpointing.named import REGISTRY, resolve_checkpoint, shipped_models
from ..data.dataset import load_prepared
from ..data.degrade import SuperResolution
from ..data.prepare import PrepareOptions, prepare
from ..data.samples import samples_dir
from ..diffusion.checkpoint import load_model
from ..io.atomic import atomic_path, atomic_write_text
from ..io.outdir import check_output_dir, mark
from ..metrics.calibration import calibration, calibration_figure, error_std_factor
from ..metrics.compare import evaluate_arrays
from ..metrics.report import STD_CAPTION, STD_LABEL, write_html_report
from ..metrics.table import write_table
from ..samplers.consistency import measurement_for, sr_consistency_error
from ..samplers.registry import SamplingDefaults, resolve
from ..samplers.run import sample_slices, summarise
from ..uncertainty.calibrate import read_calibrations
from ..uncertainty.evaluate import anatomy_mask, interval_report, reliability_figure

SAMPLED_CHECKPOINT = Path(__file__).resolve().parent.parent / "checkpoints" / "demo_sr_x4.safetensors"  # demo_sr_x4
DEMO_TASK = "super-resolution x4"  # the demo's short_task in models.yaml: anti-aliased x4 of MR slices
DETERMINISTIC = ("posterior_mean",)  # samplers whose draws are one image (x_T is nearly ignored: samplers/posterior_mean.py)
LEVEL = 0.9  # the interval shown, as `meddiff sample --interval 0.9`
TARGET = (0.88, 0.92)  # issue 30's coverage target at 90% (meddiff.uncertainty.evaluate)
Z90 = 1.6448536269514722  # the two-sided 90% point of a Gaussian, for the uncalibrated reading of a spread
OPTIONAL_OUTPUTS = ("std_maps.png", "calibration.md", "calibration.csv", "calibration.png", "reliability.md",
                    "reliability.csv", "reliability.png", "interval_maps.png")  # written only with an uncertainty to show


def default_checkpoint() -> Path:
    """The shipped model src/meddiff/checkpoints/models.yaml marks `recommended: true` for DEMO_TASK."""
    cards = [c for c in shipped_models() if c.recommended and c.short_task == DEMO_TASK]
    if len(cards) != 1:
        raise CheckpointError(f"{REGISTRY}: expected one model with `recommended: true` and short_task {DEMO_TASK!r}, "
                              f"found {len(cards)} ({', '.join(c.name for c in cards) or 'none'})")
    return cards[0].path


@dataclass(frozen=True)
class DemoRequest:
    """What `meddiff demo` (super-resolution) runs: the output folder, the model (None: default_checkpoint(),
    the recommended one), the number of held-out slices and samples per slice (None: 1 for a deterministic
    sampler such as the posterior mean, else 4), the sampler settings (None: the checkpoint's), data
    consistency (none | project), seed, device, progress bar, overwrite."""

    out: Path = Path("runs/demo")
    checkpoint: str | Path | None = None
    slices: int = 8
    samples: int | None = None
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
    """The report written (report.html), the metrics table (Markdown), the calibration table of the sample
    spread ('' if none), seconds, the reliability and coverage tables (reliability.md; '' if no uncertainty)
    and the IntervalReport they come from (None if none)."""

    report: Path
    table_md: str
    calibration_md: str
    seconds: float
    reliability_md: str = ""
    reliability: object = None


def std_figure(stds: list[np.ndarray], path: Path) -> Path:
    """A row of per-pixel std maps (in [-1,1] units) with one shared colour bar, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    "Reliability (meddiff.uncertainty.evaluate): the pixels inside the anatomy (the truth smoothed > -0.9, holes filled) "
    "are sorted by predicted error into 10 deciles of equal count; per decile, predicted RMS error against actual RMSE "
    "of the restored image (1 = calibrated; target within 1.5x); coverage = share of those pixels with "
    "lower <= truth <= upper (target 0.88-0.92 for a 90% interval).",
]


def plain_notes(n: int, factor: float, lr_shape, sampler: str, steps: int, samples: int, seed: int, seconds: float,
                device, cons: dict[str, float], model: str = "the model") -> list[str]:
    """The report's notes in plain words (the formulas are the FOOTNOTES)."""
    better = "closer to" if cons["meddiff sample"] <= cons["bicubic"] else "further from"
    how = (f"the posterior mean ({sampler}: one network call per slice, no random draw)" if sampler in DETERMINISTIC
           else f"{sampler} sampler, {steps} steps, {samples} sample(s) per slice, seed {seed}")
    return [
        f"What was tested: {n} slices of Colin27, a brain MRI of one person no shipped model saw (they learned from the "
        f"MNI152 template and synthetic images only). Each slice was shrunk {factor:g} times (to {lr_shape[0]} x "
        f"{lr_shape[1]} pixels) and {model} was asked to restore the full size; the original slice is the truth it is "
        "compared with.",
        f"How: {how}; {seconds:.0f} s on {device}.",
        "Higher PSNR and SSIM mean closer to the truth [1]; a gradient ratio near 1 means as sharp as the truth [2].",
        f"Shrinking the meddiff result again gives an image {better} the measured low-resolution input than "
        f"shrinking the bicubic one ({cons['meddiff sample']:.2e} vs {cons['bicubic']:.2e}) [3].",
    ]


def sr_demo(req: DemoRequest) -> DemoResult:
    """Run the super-resolution demo of `req` (module docstring) and write its report under req.out."""
    device = req.device
    t0 = time.perf_counter()
    req, checkpoint, cfg, denoiser, spec, interval = _checked_model(req)
    out: Path = req.out
    mark(out, "demo")  # checks passed: the first write
    for name in OPTIONAL_OUTPUTS:  # an earlier demo's (--overwrite) that this run may not write again
        (out / name).unlink(missing_ok=True)
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

    one = "posterior mean" if spec.name in DETERMINISTIC and req.samples == 1 else "1 sample"
    methods = {"bilinear": arrays(bilinear), "bicubic": arrays(bicubic), f"meddiff ({one})": arrays(samples[0])}
    if req.samples > 1:
        methods[f"meddiff (mean of {req.samples})"] = arrays(mean)
    table = evaluate_arrays(methods, arrays(x0), data_range=2.0)

    cons = {name: float(sr_consistency_error(img, lr).mean()) for name, img in
            (("bicubic", bicubic), ("meddiff sample", samples[0]))}
    model = Path(checkpoint).stem if Path(checkpoint).suffix == ".safetensors" else str(checkpoint)
    notes = _table_notes(req, spec, cfg.task.sr_factor, len(idx), tuple(lr.shape[-2:]), t_sample, cons, model)
    md = write_table(table, out / "results.md", out / "results.csv", notes=notes)
    notes = plain_notes(len(idx), cfg.task.sr_factor, lr.shape[-2:], spec.name, spec.steps, req.samples, req.seed,
                        t_sample, device, cons, model)  # the HTML report's: plain words, formulas in its footnotes
    norm = prep.normalisation_of("test", int(idx[0]))  # Colin27 is one patient: one map back to its own units
    images = _image_rows(req, lr, bicubic, samples, mean, x0, one)
    extra, cal_md = _uncertainty(req, samples, std, x0, out, notes)
    unc = _reliability(interval, req.samples, mean, std, cond, lr, x0, out, notes, norm)
    extra.update(unc.figures)
    report = _write_report(out, norm, rows, images, std, req.samples, table, notes, extra, unc)
    return DemoResult(report, md, cal_md, time.perf_counter() - t0, unc.md, unc.report)


def _checked_model(req: DemoRequest):
    """(req with its sample count settled, the model file, its config and denoiser, the SamplingSpec, its stored
    interval calibration or None), every setting checked before anything is written."""
    checkpoint = resolve_checkpoint(req.checkpoint or default_checkpoint())  # a model name -> its file
    check_output_dir(req.out, [checkpoint], overwrite=req.overwrite, verb="demo")
    cfg, _, denoiser = load_model(checkpoint, expect_task="sr", device=req.device, precision=req.precision)
    if req.samples is None:  # one draw of a deterministic sampler is all its draws
        req = replace(req, samples=1 if (req.sampler or cfg.sampler.name) in DETERMINISTIC else 4)
    spec = resolve(SamplingDefaults.of_ddpm(cfg), sampler=req.sampler, steps=req.steps, eta=req.eta, grid=req.grid,
                   precision=req.precision, samples=req.samples, consistency=req.consistency)
    if req.slices < 1:
        raise FieldError("slices", req.slices, "expected >= 1")
    return req, checkpoint, cfg, denoiser, spec, _stored_interval(checkpoint, spec)


def _stored_interval(checkpoint, spec):
    """The model file's stored interval calibration (meddiff.uncertainty.calibrate) for the sampler and
    sample count of `spec` at LEVEL, as `meddiff sample --interval 0.9` would use; None if it has none, or
    with data consistency (the calibration saw unprojected outputs)."""
    if spec.consistency != "none":
        return None
    for c in read_calibrations(resolve_model_file(checkpoint)):
        if c.sampler == f"{spec.name} {spec.steps}" and c.samples == spec.samples and any(
                abs(a - LEVEL) < 1e-9 for a in c.levels):
            return c
    return None


def _held_out_slices(req: DemoRequest, out: Path, size: int):
    """(the prepared Colin27 folder, the indices of req.slices evenly spaced test slices, their manifest rows,
    x0 [N, 1, size, size] in [-1, 1]); Colin27 is prepared under `out` once (prepared_colin27/)."""
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
                 cons: dict[str, float], model: str = "meddiff") -> list[str]:
    """The notes under results.md: the data, the model, the sampler and its cost, consistency, how accutance is computed."""
    sampler, steps, eta = spec.name, spec.steps, spec.eta
    grid_note = f" on the {spec.grid} grid" if "grid" in spec.entry.options else ""
    n_calls = req.samples * n * steps
    return [
        f"Held-out data: {n} slices of Colin27 (one person; the shipped models were trained on the MNI152 template and "
        f"synthetic images only), x{factor:g} anti-aliased downsampling to {lr_size}, metrics on the [-1,1] scale (data range 2).",
        f"meddiff: {model}, {sampler} sampler{f' (eta {eta:g})' if sampler == 'ddim' else ''}"
        f"{grid_note}, {steps} steps, {req.samples} sample(s) per slice, seed {req.seed}; "
        f"{t_sample:.0f} s for {n_calls} slice-steps on {req.device}.",
        f"Consistency with the measurement (RMS of clamp(A x) - y, A = the x{factor:g} anti-aliased downsampling; "
        f"data consistency {req.consistency}): bicubic {cons['bicubic']:.2e}, meddiff sample {cons['meddiff sample']:.2e}.",
        "accutance = 1000 * mean squared Sobel gradient / range^2 (meddiff.metrics.image.accutance); "
        "gradient_ratio = accutance / accutance of the ground truth (1 = as sharp as the truth).",
    ]


def _image_rows(req: DemoRequest, lr, bicubic, samples, mean, x0, one: str = "1 sample") -> list[dict[str, np.ndarray]]:
    """One row of the report's grid per slice ([-1, 1]): low-res (nearest), bicubic, a sample (or the posterior
    mean), the mean of the samples, the truth."""
    first = "meddiff posterior mean" if one == "posterior mean" else "meddiff sample"
    return [
        {"low-res (x4)": interpolate_baseline(lr[i : i + 1], x0.shape[-2:], "nearest")[0, 0].numpy(),
         "bicubic": bicubic[i, 0].numpy(), first: samples[0, i, 0].numpy(),
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


@dataclass
class Reliability:
    """What _reliability made: the report's figures {title: PNG}, extra tables {title: Markdown}, the Markdown
    printed and written (reliability.md, '' if none), the IntervalReport (None if none) and, per slice, the
    predicted-error map the grid shows under the meddiff output (None if none) with its row label and caption."""

    figures: dict
    tables: dict
    md: str = ""
    report: object = None
    maps: list | None = None
    label: str = ""
    caption: str = ""


def _reliability(cal, n_samples: int, mean, std, cond, lr, x0, out: Path, notes: list[str], norm) -> Reliability:
    """The interval of the model (its stored calibration `cal`, as `meddiff sample --interval 0.9`) or, without
    one, mean ± Z90 x the predicted error of the sample spread; coverage inside the anatomy, the reliability by
    deciles of predicted error (meddiff.uncertainty.evaluate), reliability.png / .md / .csv, interval_maps.png
    (calibrated only), notes in plain words. Nothing without a calibration and with no spread (one sample, or
    identical samples)."""
    m = mean.double().numpy()[:, 0]
    t = x0.double().numpy()[:, 0]
    got = _interval_arrays(cal, n_samples, m, std, cond, lr)
    if got is None:
        notes.append("No uncertainty to check: this model has no stored interval calibration for this sampler "
                     "(`meddiff sample --interval` would refuse it) and one draw has no spread.")
        return Reliability({}, {})
    lower, upper, pred, label = got
    mask = np.stack([anatomy_mask(x) for x in t])
    rep = interval_report(m - t, pred, (lower <= t) & (t <= upper), mask)
    n = len(m)
    reliability_figure({f"Colin27 (held out), {n} slice(s), x4": {label: rep}}, out / "reliability.png")
    md, tables, ratios = _reliability_tables(rep, label, out)
    within = sum(1 / 1.5 <= r <= 1.5 for r in ratios)
    lo, hi = TARGET
    verdict = ("within the 88-92% target" if lo <= rep.coverage <= hi else
               f"{'below' if rep.coverage < lo else 'above'} the 88-92% target: on these slices the intervals are too "
               f"{'narrow' if rep.coverage < lo else 'wide'}")
    what = "the 90% interval" if cal is not None else f"mean ± {Z90:.3f} x the spread's predicted error"
    notes.append(f"Coverage: inside the anatomy of these {n} held-out slices ({rep.pixels} pixels), {what} held the "
                 f"true value in {rep.coverage:.1%} of the pixels, {verdict} [5].")
    notes.append(f"Reliability (the diagram below): per decile of predicted error, the actual error was "
                 f"{min(ratios):.2f} to {max(ratios):.2f} times the predicted one ({within} of 10 deciles within 1.5x; "
                 f"Spearman {rep.spearman:.2f} between predicted and actual |error|) [5].")
    figures = {"Reliability on the held-out slices: actual vs predicted error per decile of predicted error":
               out / "reliability.png"}
    if cal is None:
        notes.append("This model has no stored interval calibration for this sampler, so the interval above is a Gaussian "
                     "reading of the sample spread that nothing calibrated.")
        return Reliability(figures, tables, md, rep)
    notes.append(f"The interval maps (lower, upper and their width, below) are {cal.sentence(LEVEL)}.")
    interval_figure(lower, upper, norm, out / "interval_maps.png")
    figures[f"The {LEVEL:.0%} interval per slice: lower, upper, width (upper − lower)"] = out / "interval_maps.png"
    return Reliability(figures, tables, md, rep, [p * norm.scale() for p in pred], "predicted error (calibrated)",
                       "the calibrated predicted RMS error (the interval's error scale, meddiff.uncertainty)")


def _interval_arrays(cal, n_samples: int, m: np.ndarray, std, cond, lr):
    """(lower, upper, predicted RMS error) [N, H, W] around the restored slices m [N, H, W] and the label of
    the uncertainty: the stored calibration `cal` if any, else mean ± Z90 x the spread's predicted error
    (std x sqrt(1 + 1/S)); None with neither (no calibration, one sample or identical samples)."""
    if cal is not None:
        s = std.double().numpy()[:, 0] if n_samples > 1 else None
        got = [cal.interval(LEVEL, m[i], cond[i, 0].double().numpy(), lr[i, 0].double().numpy(),
                            None if s is None else s[i]) for i in range(len(m))]
        lower, upper, pred = (np.stack(a) for a in zip(*got))
        return lower, upper, pred, f"calibrated {LEVEL:.0%} interval ({cal.kind} error scale)"
    if n_samples > 1 and float(std.max()) > 0.0:
        pred = np.maximum(std.double().numpy()[:, 0] * error_std_factor(n_samples), 1e-6)
        return m - Z90 * pred, m + Z90 * pred, pred, f"sample spread x{Z90:.3f} (not calibrated)"
    return None


def _reliability_tables(rep, label: str, out: Path) -> tuple[str, dict[str, str], list[float]]:
    """reliability.md (coverage summary and per-decile table) and reliability.csv (the deciles) written;
    returns (the Markdown, the report's {title: table}, actual / predicted per decile)."""
    ratios = [a / p for p, a in zip(rep.decile_predicted, rep.decile_actual)]
    summary = ["| uncertainty | pixels | 90% coverage (target 0.88-0.92) | Spearman | worst decile ratio | slope | ECE | "
               "RMSE / predicted |", "|---|---:|---:|---:|---:|---:|---:|---:|",
               f"| {label} | {rep.pixels} | {rep.coverage:.3f} | {rep.spearman:.2f} | {rep.worst_ratio:.2f} | {rep.slope:.2f} | "
               f"{rep.ece:.4f} | {rep.rmse / rep.predicted:.2f} |"]
    deciles = ["| decile of predicted error | predicted RMS error | actual RMSE | actual / predicted |", "|---:|---:|---:|---:|"]
    deciles += [f"| {k + 1} | {p:.4f} | {a:.4f} | {r:.2f} |"
                for k, (p, a, r) in enumerate(zip(rep.decile_predicted, rep.decile_actual, ratios))]
    md = ("Coverage and reliability inside the anatomy of the held-out slices ([-1, 1] units):\n\n" + "\n".join(summary)
          + "\n\n" + "\n".join(deciles) + "\n")
    atomic_write_text(out / "reliability.md", md)
    atomic_write_text(out / "reliability.csv", "decile,predicted_rms,actual_rmse,ratio\n" + "".join(
        f"{k + 1},{p!r},{a!r},{r!r}\n" for k, (p, a, r) in enumerate(zip(rep.decile_predicted, rep.decile_actual, ratios))))
    return md, {"Coverage and reliability (inside the anatomy)": "\n".join(summary),
                "Per decile of predicted error": "\n".join(deciles)}, ratios


def interval_figure(lower: np.ndarray, upper: np.ndarray, norm, path: Path) -> Path:
    """PNG, written atomically: per slice (columns) the lower and upper ends of the interval in the image's own
    units (norm: the slices' Normalisation; one gray window) and its width upper - lower (one colour bar)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(lower)
    width = (upper - lower) * norm.scale()
    vmax = float(np.percentile(width, 99.5)) or 1e-6
    fig, axes = plt.subplots(3, n, figsize=(1.5 * n + 1.0, 4.8), squeeze=False)
    for i in range(n):
        for r, (img, kw) in enumerate(((norm.inverse(lower[i]), dict(cmap="gray", vmin=norm.lo, vmax=norm.hi)),
                                       (norm.inverse(upper[i]), dict(cmap="gray", vmin=norm.lo, vmax=norm.hi)),
                                       (width[i], dict(cmap="magma", vmin=0, vmax=vmax)))):
            im = axes[r, i].imshow(img, **kw)
            axes[r, i].set_xticks([])
            axes[r, i].set_yticks([])
            if i == 0:
                axes[r, i].set_ylabel(("lower", "upper", "width")[r])
    fig.colorbar(im, ax=axes[2].tolist(), shrink=0.8, label=f"width ({norm.units} units)")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path


def _write_report(out: Path, norm, rows, images, std, n_samples: int, table, notes, extra, unc: Reliability) -> Path:
    """report.html: the grid in Colin27's own units (one patient: one map back), the std maps (or the calibrated
    predicted error) beside the error they should predict, the table, notes and the reliability tables."""
    images = [{k: norm.inverse(v) for k, v in row.items()} for row in images]
    if n_samples > 1:  # per-pixel std of the samples, beside the error it should predict
        stds = [{f"meddiff mean of {n_samples}": std[i, 0].numpy() * norm.scale()} for i in range(len(rows))]
        label, caption = STD_LABEL, STD_CAPTION
    elif unc.maps is not None:  # the calibrated predicted error of the interval, beside the real error
        first = next(k for k in images[0] if k.startswith("meddiff"))
        stds = [{first: p} for p in unc.maps]
        label, caption = unc.label, unc.caption
    else:
        stds, label, caption = None, STD_LABEL, STD_CAPTION
    return write_html_report(
        out / "report.html", title="meddiff demo: MRI super-resolution x4 on a held-out brain", rows_of_images=images,
        row_labels=[f"{r['source'].split('/')[-1]} slice {r['slice_index']}" for r in rows],
        table_rows=table, notes=notes, extra_images=extra, footnotes=FOOTNOTES, std_maps=stds,
        extra_tables=unc.tables, window=(norm.lo, norm.hi), units=f"{norm.units} MR signal units of the Colin27 file",
        std_label=label, std_caption=caption,
    )
