"""`meddiff demo --task denoise` and `--task generate`: the chest X-ray models on held-out films.

denoise: four real films of held-out patients (two adult NIH ChestX-ray14, two pediatric Kermany;
src/meddiff/data/samples/cxr_films) are degraded twice, with Med-cDiff's noise (Gaussian sigma 0.1 in
[-1, 1] units + 1% salt-and-pepper) and as a 10%-dose exposure (Poisson quanta + electronic noise,
meddiff.data.low_dose), and restored by the shipped `xray_denoise` (its stored one-call sampler) and by
median + non-local means; a few DPM-Solver++ samples give the per-pixel uncertainty map.
generate: `xray_vdm64` draws films, shown beside the held-out real films at the same size.
Both write OUT/report.html and OUT/results.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from ..baselines.classical import median_filter, nl_means
from ..checkpointing.named import resolve_checkpoint
from ..data.degrade import Denoise
from ..data.low_dose import LowDose, low_dose
from ..data.samples import samples_dir
from ..diffusion.checkpoint import load_pretrained
from ..errors import InputError
from ..io.outdir import check_output_dir, mark
from ..metrics.compare import evaluate_arrays
from ..metrics.report import write_html_report
from ..metrics.table import write_table
from ..samplers.registry import SamplingDefaults, resolve
from ..samplers.run import sample_slices, summarise
from ..vdm.checkpoint import load_vdm
from ..vdm.generate import generate_images, generation_steps

DENOISER = "xray_denoise"
GENERATOR = "xray_vdm64"
LEVELS = (("Gaussian 0.1 + 1% salt-and-pepper", None), ("10% dose", 0.10))


def held_out_films() -> tuple[list[np.ndarray], list[str]]:
    """The shipped held-out films on [-1, 1] (each by its own 0.5/99.5 percentiles) and their labels."""
    import csv

    from PIL import Image

    folder = samples_dir("cxr_films")
    films, labels = [], []
    with open(folder / "films.csv", newline="") as f:
        for r in csv.DictReader(f):
            a = np.asarray(Image.open(folder / r["file"]).convert("L"), dtype=np.float32)
            lo, hi = np.percentile(a, [0.5, 99.5])
            films.append(np.clip((a - lo) / max(hi - lo, 1e-6) * 2 - 1, -1, 1).astype(np.float32))
            source = "adult" if r["source"].startswith("NIH") else "pediatric"
            labels.append(f"{source}, {r['finding']}")
    return films, labels


def _degrade(x0: torch.Tensor, dose: float | None, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if dose is None:
        return Denoise(noise_std=(0.1, 0.1), salt_pepper=(0.01, 0.01))(x0, g)[0]
    return low_dose(x0, torch.full((x0.shape[0],), dose), LowDose(), g)


SAMPLING_FLAGS = ("sampler", "steps", "eta", "grid", "precision")


def refuse_sampling_flags(args: argparse.Namespace, keep: tuple[str, ...] = ()) -> None:
    """These demos run fixed samplers (denoise: the checkpoint's stored one and 5-step DPM-Solver++ draws; generate:
    the VDM's ancestral chain, whose steps `--steps` sets): a sampling flag they would ignore is refused, by its name."""
    for key in SAMPLING_FLAGS:
        if key not in keep and getattr(args, key, None) is not None:
            raise InputError(f"--{key} applies to `meddiff demo --task sr`, not --task {args.task}"
                             + (" (--steps sets the ancestral steps)" if keep else ""))


def run_denoise(args: argparse.Namespace) -> int:
    refuse_sampling_flags(args)
    t0 = time.perf_counter()
    out: Path = args.out
    check_output_dir(out, [], overwrite=args.overwrite)
    cfg, denoiser = load_pretrained(args.checkpoint or DENOISER, expect_task="denoise")
    mark(out, "demo")
    films, labels = held_out_films()
    x0 = torch.from_numpy(np.stack(films))[:, None]
    rows, row_labels, stds, table_in = [], [], [], {"noisy": [], "median + NLM": [], "meddiff": []}
    truth: list[np.ndarray] = []
    for li, (level, dose) in enumerate(LEVELS):
        y = _degrade(x0, dose, seed=args.seed + li)
        stored = SamplingDefaults.of_ddpm(cfg)
        mean = sample_slices(denoiser, y, resolve(stored), seed=args.seed, progress=False)[0]
        draws = sample_slices(denoiser, y, resolve(stored, sampler="dpm_solver_pp", steps=5, samples=max(4 if args.samples is None else args.samples, 2)),
                              seed=args.seed, progress=False)
        _, std = summarise(draws)
        for i in range(len(films)):
            classical = nl_means(median_filter(y[i, 0].numpy()))
            rows.append({"noisy": y[i, 0].numpy(), "median + NLM": classical, "meddiff": mean[i, 0].numpy(),
                         "truth": films[i]})
            stds.append({"meddiff": std[i, 0].numpy()})
            row_labels.append(f"{labels[i]}; {level}")
            for k in table_in:
                table_in[k].append(rows[-1][k])
            truth.append(films[i])
    table = evaluate_arrays(table_in, truth, data_range=2.0)
    seconds = time.perf_counter() - t0
    notes = [f"Held-out films: {len(films)} real chest radiographs of patients no shipped model trained on (two adult, NIH "
             "ChestX-ray14; two pediatric, Kermany), each degraded at two levels: " + "; ".join(l for l, _ in LEVELS) + ".",
             f"meddiff: {args.checkpoint or DENOISER} with its stored sampler ({cfg.sampler.name}, {cfg.sampler.steps} "
             f"call); uncertainty: the per-pixel spread of {max(4 if args.samples is None else args.samples, 2)} DPM-Solver++ samples (5 steps). "
             f"{seconds:.0f} s in all. Scores on the [-1, 1] scale (data range 2), one film each: a demonstration, "
             "not the benchmark (benchmarks/cxr_denoise.py scores 40 films per source)."]
    md = write_table(table, out / "results.md", out / "results.csv", notes=notes)
    report = write_html_report(out / "report.html", title="meddiff demo: chest X-ray denoising on held-out films",
                               rows_of_images=rows, row_labels=row_labels, table_rows=table, notes=notes,
                               std_maps=stds, units="film grey levels, each film scaled by its own 0.5-99.5 percentiles")
    print(md)
    print(f"report: {report}  ({seconds:.0f} s in all)")
    return 0


def run_generate(args: argparse.Namespace) -> int:
    refuse_sampling_flags(args, keep=("steps",))
    t0 = time.perf_counter()
    out: Path = args.out
    check_output_dir(out, [], overwrite=args.overwrite)
    vdm = load_vdm(resolve_checkpoint(args.checkpoint or GENERATOR))
    steps = generation_steps(vdm, args.steps)
    mark(out, "demo")
    n = 2 * 4  # two generated films beside each of the four held-out real ones
    levels = generate_images(vdm, n, steps=steps, seed=args.seed)
    v = vdm.cfg.vdm.vocab_size
    generated = levels / (v - 1) * 2 - 1
    films, labels = held_out_films()
    size = generated.shape[-1]
    real = [torch.nn.functional.interpolate(torch.from_numpy(f)[None, None], size=(size, size), mode="area")[0, 0].numpy()
            for f in films]
    rows = [{"generated": generated[2 * i], "generated ": generated[2 * i + 1], "held-out real film": real[i]}
            for i in range(len(real))]
    seconds = time.perf_counter() - t0
    notes = [f"{n} films drawn by {args.checkpoint or GENERATOR} ({steps} sampling steps, seeds {args.seed}..{args.seed + n - 1}), "
             f"{seconds:.0f} s; beside them the held-out real films at the same {size}x{size} (area-averaged from 256 px). "
             "Synthetic images: not for diagnosis. The model card (meddiff models xray_vdm64) gives FID/KID, "
             "precision/recall and the memorisation check on held-out patients."]
    report = write_html_report(out / "report.html", title="meddiff demo: chest X-ray generation (Medical VDM)",
                               rows_of_images=rows, row_labels=[f"samples {2 * i}, {2 * i + 1}; real: {labels[i]}" for i in range(len(real))], truth_key=None,
                               error_maps=False, notes=notes, units="[-1, 1] film grey levels")
    print(f"report: {report}  ({seconds:.0f} s in all)")
    return 0
