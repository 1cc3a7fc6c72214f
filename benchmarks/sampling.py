"""Fast sampling checked, not assumed: quality, agreement with the long ancestral chain, data consistency, time.

On held-out real slices (Colin27, one person; the demo models were trained on the MNI152 template
only), for each sampler, number of steps and data-consistency mode, the table gives the scores of
one sample per slice against the ground truth, its agreement with a reference chain (by default
the paper's 2000-step ancestral sampler) drawn from the same per-slice seeds, the consistency
error and the wall time per slice. The task (super-resolution, denoising, inpainting) is read
from the checkpoint.

Usage (the full runs; --cache makes reruns reuse every finished sampler run, e.g. the 2000-step chain):

    python benchmarks/sampling.py --checkpoint src/meddiff/checkpoints/demo_sr_x4.safetensors --slices 4 \\
        --runs ancestral:5,10,20,50,100,250,1000 ddim:3,5,10,20,50 dpm_solver_pp:3,5,10,20 \\
        --reference ancestral:2000 --consistency none,project,final --spread \\
        --cache runs/bench_cache --out runs/bench_sampling_sr
    python benchmarks/sampling.py --checkpoint runs/demo_denoise --slices 4 \\
        --runs ancestral:5,10,20,50,100,250,1000 ddim:3,5,10,20,50 dpm_solver_pp:3,5,10,20 \\
        --reference ancestral:2000 --spread --cache runs/bench_cache --out runs/bench_sampling_denoise

The first command is 36 sampler runs, 11,122 network calls on batches of 4 slices (7,122 without
--spread); with the SR demo model at 1 thread on this shared 2-core CPU a call took ~1.1 s, so ~3.5 h
(the script probes and prints its own estimate first; --dry-run prints only that).

    # smoke test (seconds): python benchmarks/sampling.py --checkpoint runs/demo_sr_x4/checkpoints/latest \\
    #     --slices 1 --runs ancestral:2,4 ddim:2 dpm_solver_pp:2 --reference ancestral:8 --threads 1 --out /tmp/bench

--runs SAMPLER[@OPTION...]:STEPS,STEPS,...   (several, space separated)
    ancestral        respaced ancestral chain; @beta | @beta_tilde = reverse variance (default: the checkpoint's)
    ddim             DDIM, eta 0 by default; @1 (or @eta=1, @0.5, ...) sets eta; @logsnr = log-SNR time grid
    dpm_solver_pp    DPM-Solver++ 2M by default; @1m | @2m | @3m (or @order=N) = order; @logsnr = log-SNR grid
    posterior_mean   the network's x0 estimate at the chain's start (steps 1: one call)
    e.g. ddim@1:50  dpm_solver_pp@3m@logsnr:5,10  posterior_mean:1
--student NAME=PATH   a distilled student of the checkpoint (`meddiff train`, objective distill; repeatable),
          sampled with its stored sampler (student, one call) from the same per-slice seeds, compared with
          the same reference; its outputs are cached under its own file's hash
--lpips   an LPIPS column: the shift-tolerant LPIPS distance to the truth (meddiff.metrics.lpips, offline weights)
--reference SAMPLER[@OPTION...]:STEPS   the chain every run is compared with (same per-slice seeds)
--consistency MODE,MODE   (default: none,project,final for SR and inpainting, none for denoising)
    none      the sampler as is (for inpainting the known pixels are NOT pasted back)
    project   data consistency at every step: restore(..., consistency=measurement_for(...)), i.e. SR: each
              x0 estimate projected onto {x : A x = y}; inpainting: known pixels replaced in each x0 estimate
    final     the 'none' outputs made consistent once at the end (SR projection / known pixels pasted back,
              which is what `meddiff sample` writes for inpainting); no network call, computed from the 'none' run
    repaint   inpainting with the ancestral sampler only: RePaint with --resample U (other samplers skipped)
--spread  also draws the reference with seed+1: its scores show how much one sample's metrics move with
          the seed, and its agreement with the reference is the floor for the agreement criterion below.

Each mode has its own reference (the reference sampler run with that mode; 'final' = the reference
'none' output made consistent), so deltas compare like with like.

Held-out data and degradations: the Colin27 volume prepared as `meddiff prepare` does at the model's
size (--prepared, default CACHE/colin27_<size> or OUT/prepared_colin27), --slices evenly spaced slices
(the centres of equal runs of the volume's slices; one slice = the middle one).
SR: the task's anti-aliased downsampling, the low-resolution image y is the measurement and its
bicubic upsampling the condition; denoising: the task's degradation (noise levels drawn per slice)
from a torch generator seeded with --data-seed, so the noisy inputs are fixed; inpainting: masks of
the task's kinds/coverage from a generator seeded with --data-seed. Sampler noise: per-slice seeds
from (--seed, slice, 0) as `meddiff sample` (meddiff.samplers.run.restore), the same for every run.

Columns (means over the slices; the JSON holds every per-slice value):
    sampler, steps, consistency   the run ("-" for baselines); "(reference)" marks the reference chain
    PSNR, SSIM                    against the ground truth, data range 2 ([-1, 1] images), meddiff.metrics.image
    LPIPS                         with --lpips: shift-tolerant LPIPS to the truth (lower = perceptually closer)
    accutance                     1000 * mean squared Sobel gradient / 2^2 (sharpness; noise raises it too)
    grad ratio                    accutance / accutance of the truth (1 = as sharp as the truth)
    PSNR vs ref, SSIM vs ref      the output against the reference output of the same mode (agreement)
    dPSNR, dSSIM                  mean over slices of (score vs truth) - (reference's score vs truth)
    cons. error                   SR: RMS of A x - y in [-1, 1] units (sr_consistency_error, mean over slices);
                                  inpainting: max |x - y| over the known pixels (max over slices); denoising: -
    s/slice                       wall seconds per slice of the sampler run (as measured when first computed,
                                  on a shared CPU; cached runs keep that figure)
Baseline rows: SR bicubic (and bicubic projected onto A x = y); denoising the noisy input and a 3x3
median filter; inpainting the condition (holes at 0). Then the ground truth.

Summary per sampler and mode:
    matches the reference:   fewest steps with |dPSNR| <= 0.2 dB and |dSSIM| <= 0.005 (scores vs truth);
                             also "no worse": dPSNR >= -0.2 and dSSIM >= -0.005 (a blurrier, mean-like output
                             can score above a sample of the reference chain)
    agrees with reference:   with --spread only: fewest steps whose PSNR and SSIM vs the reference are at least
                             those of a second reference draw (seed+1) vs the reference. A floor, not proof of
                             equal distribution: the posterior mean is closer to any sample than two samples are.
    "not reached up to N" if no tested step count qualifies; "(not at M)" if a larger tested count fails again.

Outputs (written atomically): OUT/sampling.md (table, notes, summary), OUT/sampling.csv (table),
OUT/sampling.json (settings and raw per-slice numbers). Cache: CACHE/<checkpoint sha256[:16]>/
<task>_<inputs hash>_seed<S>_<sampler options>_<steps>_<mode>.npy (+ .json with the seconds), keyed by the
checkpoint file's hash, the task, the slices and degraded inputs, the seed, the sampler, steps and mode.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from meddiff.data.dataset import load_prepared
from meddiff.data.degrade import Denoise, Inpaint, SuperResolution, build_degradation
from meddiff.data.prepare import PrepareOptions, prepare
from meddiff.data.samples import samples_dir
from meddiff.errors import InputError, MeddiffError
from meddiff.samplers.run import restore
from meddiff.samplers.registry import SAMPLERS
from meddiff.io.atomic import atomic_path, atomic_write_text
from meddiff.metrics.image import accutance, gradient_ratio, psnr, ssim
from meddiff.samplers.consistency import check_request, measurement_for, replace_known, sr_consistency_error, sr_project
from meddiff.diffusion.grid import GRIDS
from meddiff.checkpointing import resolve_model_file
from meddiff.diffusion.checkpoint import load_model

DATA_RANGE = 2.0
PSNR_TOL, SSIM_TOL = 0.2, 0.005
MODES = ("none", "project", "final", "repaint")


# ----------------------------------------------------------------------------- run specifications

@dataclass(frozen=True)
class Run:
    """One sampler configuration at one number of steps. options: the sampler's keyword arguments, all explicit."""

    sampler: str
    options: tuple[tuple[str, object], ...]
    steps: int

    @property
    def kwargs(self) -> dict[str, object]:
        return dict(self.options)

    def name(self, default_variance: str) -> str:
        """Table label: the sampler and the options that differ from its defaults."""
        o = self.kwargs
        if self.sampler == "ddim":
            label = "ddim" + (f" eta={o['eta']:g}" if o["eta"] != 0 else "")
        elif self.sampler == "dpm_solver_pp":
            label = f"dpm_solver_pp {o['order']}M"
        elif self.sampler in ("posterior_mean", "student"):
            label = self.sampler
        else:
            label = "ancestral" + (f" {o['variance']}" if o["variance"] != default_variance else "")
        return label + (f" {o['grid']}" if o.get("grid", "uniform") != "uniform" else "")

    def key(self) -> str:
        """Canonical text of sampler and options (for the cache)."""
        return self.sampler + "".join(f"@{k}={v}" for k, v in self.options)

    def calls(self, resample: int = 1) -> int:
        """Network evaluations for all slices of a batch (RePaint: U per step but the last)."""
        return (self.steps - 1) * resample + 1 if resample > 1 else self.steps


def parse_option(sampler: str, token: str, opts: dict[str, object]) -> None:
    """Apply one @OPTION of a run spec to opts (in place); InputError naming the token otherwise."""
    key, _, value = token.partition("=")
    if not value:  # shorthands
        if token in GRIDS and sampler in ("ddim", "dpm_solver_pp"):
            key, value = "grid", token
        elif token in ("beta", "beta_tilde") and sampler == "ancestral":
            key, value = "variance", token
        elif token.lower() in ("1m", "2m", "3m") and sampler == "dpm_solver_pp":
            key, value = "order", token[0]
        elif sampler == "ddim":
            key, value = "eta", token
    try:
        if sampler == "ddim" and key == "eta":
            eta = float(value)
            if not 0.0 <= eta <= 1.0:
                raise ValueError
            opts["eta"] = eta
        elif sampler in ("ddim", "dpm_solver_pp") and key == "grid" and value in GRIDS:
            opts["grid"] = value
        elif sampler == "dpm_solver_pp" and key == "order" and value in ("1", "2", "3"):
            opts["order"] = int(value)
        elif sampler == "ancestral" and key == "variance" and value in ("beta", "beta_tilde"):
            opts["variance"] = value
        else:
            raise ValueError
    except ValueError:
        raise InputError(f"@{token} is not an option of {sampler}: expected "
                         + {"ddim": "@ETA in [0, 1] (or @eta=X), @uniform | @logsnr",
                            "dpm_solver_pp": "@1m | @2m | @3m (or @order=N), @uniform | @logsnr",
                            "ancestral": "@beta | @beta_tilde"}.get(sampler, "no options")) from None


def parse_runs(spec: str, default_variance: str, timesteps: int) -> list[Run]:
    """'SAMPLER[@OPTION...]:STEPS,STEPS,...' -> one Run per step count (see the module docstring)."""
    head, sep, steps_text = spec.partition(":")
    if not sep or not steps_text:
        raise InputError(f"run {spec!r}: expected SAMPLER[@OPTION...]:STEPS[,STEPS...], e.g. ddim:5,10")
    sampler, *tokens = head.split("@")
    if sampler not in SAMPLERS:
        raise InputError(f"run {spec!r}: sampler {sampler!r}, expected one of {sorted(SAMPLERS)}")
    opts: dict[str, object] = {"ancestral": {"variance": default_variance}, "ddim": {"eta": 0.0, "grid": "uniform"},
                               "dpm_solver_pp": {"order": 2, "grid": "uniform"}}.get(sampler, {})
    for t in tokens:
        parse_option(sampler, t, opts)
    runs = []
    for s in steps_text.split(","):
        try:
            n = int(s)
        except ValueError:
            raise InputError(f"run {spec!r}: steps {s!r}, expected an integer") from None
        if not 1 <= n <= timesteps:
            raise InputError(f"run {spec!r}: steps {n}, expected 1..{timesteps} (the model's timesteps)")
        if sampler == "posterior_mean" and n != 1:
            raise InputError(f"run {spec!r}: posterior_mean is one network call; give steps 1")
        runs.append(Run(sampler, tuple(sorted(opts.items())), n))
    return runs


# ----------------------------------------------------------------------------- held-out data

@dataclass
class Inputs:
    """Ground truth, model condition planes and the measurement of one task on the held-out slices."""

    task: str
    truth: torch.Tensor  # [N, 1, H, W]
    planes: torch.Tensor  # [N, C_cond, H, W]: what the model is conditioned on
    degraded: torch.Tensor  # [N, 1, H, W]: the degraded image (bicubic / noisy / holes at 0)
    lowres: torch.Tensor | None = None  # SR: y [N, 1, h, w]
    mask: torch.Tensor | None = None  # inpainting: 1 = hole
    sources: list[str] = field(default_factory=list)

    def digest(self) -> str:
        """Hash of everything the samplers see and are scored against."""
        h = hashlib.sha256(self.task.encode())
        for t in (self.truth, self.planes, self.lowres, self.mask):
            if t is not None:
                h.update(str(tuple(t.shape)).encode())
                h.update(t.contiguous().numpy().tobytes())
        return h.hexdigest()[:12]


def held_out_slices(prepared: Path, size: int, count: int) -> tuple[torch.Tensor, list[str]]:
    """`count` evenly spaced slices [N, 1, size, size] of Colin27 (prepared once into `prepared`): the centres of
    `count` equal runs of the prepared slices (the demo's linspace would include the two edge slices)."""
    if not (prepared / "manifest.csv").is_file():
        print(f"preparing Colin27 at size {size} into {prepared}", flush=True)
        prepare(samples_dir("colin27"), prepared, PrepareOptions(split=(0.0, 0.0, 1.0), size=size, overwrite=True), progress=False)
    prep = load_prepared(prepared)
    test = prep.arrays["test"]
    if test.shape[-1] != size:
        raise InputError(f"{prepared} holds slices of size {test.shape[-1]}, but the model was trained at {size}; "
                         "give another --prepared folder")
    n = min(count, len(test))
    idx = ((np.arange(n) + 0.5) * len(test) / n).astype(int)  # bin centres: 1 slice = the middle one, no edge slices
    rows = [prep.rows["test"][i] for i in idx]
    names = [f"{r['source'].split('/')[-1]} slice {r['slice_index']}" for r in rows]
    return torch.from_numpy(np.asarray(test[idx], dtype=np.float32))[:, None], names


def make_inputs(task_cfg, x0: torch.Tensor, data_seed: int) -> Inputs:
    """Degrade the truth x0 with the checkpoint's task (fixed generator for noise and masks)."""
    deg = build_degradation(task_cfg)
    gen = torch.Generator().manual_seed(data_seed)
    if isinstance(deg, SuperResolution):
        lr = deg.downsample(x0)
        cond = deg.upsample(lr, tuple(x0.shape[-2:]))
        return Inputs("sr", x0, deg.model_condition(cond, torch.ones_like(cond)), cond, lowres=lr)
    if isinstance(deg, Denoise):
        noisy, ones = deg(x0, generator=gen)
        return Inputs("denoise", x0, deg.model_condition(noisy, ones), noisy)
    assert isinstance(deg, Inpaint)
    cond, mask = deg(x0, generator=gen)
    return Inputs("inpaint", x0, deg.model_condition(cond, mask), cond, mask=mask)


# ----------------------------------------------------------------------------- metrics

def consistency_error(inp: Inputs, out: torch.Tensor) -> np.ndarray | None:
    """Per slice: SR RMS of A x - y; inpainting max |x - y| over the known pixels; denoising None."""
    if inp.task == "sr":
        return sr_consistency_error(out, inp.lowres).numpy()
    if inp.task == "inpaint":
        known = inp.mask < 0.5
        return torch.where(known, (out - inp.degraded).abs(), torch.zeros_like(out)).flatten(1).amax(1).double().numpy()
    return None


def scores(inp: Inputs, out: torch.Tensor, ref: torch.Tensor | None, lpips: bool = False) -> dict[str, np.ndarray]:
    """Per-slice metrics of outputs [N, 1, H, W]: vs truth, vs the reference output, consistency error;
    lpips: also the shift-tolerant LPIPS distance to the truth (meddiff.metrics.lpips, offline weights)."""
    s = {"psnr": np.asarray(psnr(out, inp.truth, DATA_RANGE)), "ssim": np.asarray(ssim(out, inp.truth, DATA_RANGE)),
         "accutance": np.asarray(accutance(out, DATA_RANGE)), "gradient_ratio": np.asarray(gradient_ratio(out, inp.truth))}
    if lpips:
        from meddiff.metrics.lpips import lpips_distance

        s["lpips"] = np.asarray(lpips_distance(out, inp.truth), dtype=np.float64).reshape(-1)
    if ref is not None:
        s["psnr_vs_ref"] = np.asarray(psnr(out, ref, DATA_RANGE))
        s["ssim_vs_ref"] = np.asarray(ssim(out, ref, DATA_RANGE))
    err = consistency_error(inp, out)
    if err is not None:
        s["consistency_error"] = err
    return s


def make_consistent(inp: Inputs, out: torch.Tensor) -> torch.Tensor:
    """Mode 'final': SR projection onto {A x = y} / known pixels pasted back, once, on finished outputs."""
    if inp.task == "sr":
        return sr_project(out, inp.lowres)
    return replace_known(out, inp.degraded, inp.mask)


# ----------------------------------------------------------------------------- running with a cache

@dataclass(frozen=True)
class Job:
    run: Run
    mode: str  # none | project | repaint (final is derived)
    seed: int


class Runner:
    """Runs sampler jobs through meddiff.samplers.run.restore, caching each output as .npy."""

    def __init__(self, denoiser, inp: Inputs, cfg, args, ckpt_hash: str):
        self.denoiser, self.inp, self.cfg, self.args = denoiser, inp, cfg, args
        self.dir = Path(args.cache) / ckpt_hash[:16] if args.cache else None
        self.prefix = f"{inp.task}_{inp.digest()}"
        self.done: dict[Job, tuple[torch.Tensor, float, bool]] = {}
        self.calls_done, self.seconds_done = 0, 0.0

    def path(self, job: Job) -> Path | None:
        if self.dir is None:
            return None
        u = f"_U{self.args.resample}" if job.mode == "repaint" else ""
        return self.dir / f"{self.prefix}_seed{job.seed}_{job.run.key()}_{job.run.steps}_{job.mode}{u}.npy"

    def cached(self, job: Job) -> bool:
        p = self.path(job)
        return job in self.done or (p is not None and p.is_file() and p.with_suffix(".json").is_file())

    def calls(self, job: Job) -> int:
        return job.run.calls(self.args.resample if job.mode == "repaint" else 1)

    def measurement(self, mode: str):
        inp = self.inp
        if mode == "none":
            return None
        return measurement_for(inp.task, mode, inp.planes, factor=self.cfg.task.sr_factor if inp.task == "sr" else None,
                               lowres=inp.lowres, resample=self.args.resample if mode == "repaint" else 1)

    def get(self, job: Job) -> tuple[torch.Tensor, float, bool]:
        """(outputs [N, 1, H, W], seconds per slice, whether it came from the cache)."""
        if job in self.done:
            return self.done[job]
        p = self.path(job)
        if p is not None and p.is_file() and p.with_suffix(".json").is_file():
            meta = json.loads(p.with_suffix(".json").read_text())
            result = (torch.from_numpy(np.load(p)), float(meta["seconds_per_slice"]), True)
        else:
            result = self.compute(job, p)
        self.done[job] = result
        return result

    def compute(self, job: Job, p: Path | None) -> tuple[torch.Tensor, float, bool]:
        n_slices = self.inp.truth.shape[0]
        total = job.run.steps
        every = max(1, total // 10)
        t0 = time.perf_counter()

        def progress(i: int, x, x0) -> None:
            if total >= 100 and (i + 1) % every == 0:
                el = time.perf_counter() - t0
                print(f"      step {i + 1}/{total} ({el:.0f} s, ~{el / (i + 1) * (total - i - 1):.0f} s to go)", flush=True)

        out = restore(self.denoiser, self.inp.planes, sampler=job.run.sampler, steps=job.run.steps, samples=1, seed=job.seed,
                      batch_size=self.args.batch_size, progress=False, consistency=self.measurement(job.mode),
                      callback=progress, **job.run.kwargs)[0]
        seconds = time.perf_counter() - t0
        self.calls_done += self.calls(job)
        self.seconds_done += seconds
        if p is not None:
            with atomic_path(p) as tmp, open(tmp, "wb") as f:
                np.save(f, out.numpy())
            atomic_write_text(p.with_suffix(".json"), json.dumps({
                "sampler": job.run.sampler, "options": job.run.kwargs, "steps": job.run.steps, "mode": job.mode,
                "resample": self.args.resample if job.mode == "repaint" else 1, "seed": job.seed, "slices": n_slices,
                "seconds_per_slice": seconds / n_slices, "threads": torch.get_num_threads(),
                "when": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=1) + "\n")
        return out, seconds / n_slices, False


@dataclass(frozen=True)
class Student:
    """A distilled student (objective distill) measured beside its teacher: its own model file, cache and runner."""

    name: str
    file: Path
    sha256: str
    run: Run
    runner: Runner


def load_student(spec: str, teacher_cfg, inp: Inputs, args) -> Student:
    """--student NAME=PATH: the student's model (same task and data size as the checkpoint), sampled with its
    stored sampler and steps (e.g. student 1) from the same per-slice seeds."""
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise InputError(f"--student {spec!r}: expected NAME=PATH, e.g. 1step=runs/sr_x4_general_1step")
    file = resolve_model_file(path)
    scfg, _, den = load_model(file)
    if scfg.task != teacher_cfg.task or scfg.data.size != teacher_cfg.data.size:
        raise InputError(f"--student {spec!r}: task {scfg.task.kind} size {scfg.data.size}, but the checkpoint's is "
                         f"{teacher_cfg.task.kind} size {teacher_cfg.data.size}")
    digest = file_sha256(file)
    run = Run(scfg.sampler.name, (), 1 if scfg.sampler.name == "posterior_mean" else scfg.sampler.steps)
    return Student(name, file, digest, run, Runner(den, inp, scfg, args, digest))


def probe_seconds_per_call(denoiser, inp: Inputs, batch_size: int) -> float:
    """Seconds of one network evaluation on all slices: two 1-step DDIM runs, the first a warm-up."""
    for i in range(2):
        t = time.perf_counter()
        restore(denoiser, inp.planes, sampler="ddim", steps=1, seed=0, batch_size=batch_size, progress=False)
    return time.perf_counter() - t


# ----------------------------------------------------------------------------- table and summary

COLUMNS = ["sampler", "steps", "consistency", "PSNR", "SSIM", "LPIPS", "accutance", "grad ratio", "PSNR vs ref", "SSIM vs ref",
           "dPSNR", "dSSIM", "cons. error", "s/slice"]


def row_cells(label: str, steps: str, mode: str, s: dict[str, np.ndarray], ref_s: dict[str, np.ndarray] | None,
              task: str, seconds: float | None, is_ref: bool = False) -> list[str]:
    def f(v: float, fmt: str) -> str:
        return "inf" if math.isinf(v) else format(v, fmt)

    agree = ["-", "-"] if "psnr_vs_ref" not in s or is_ref else [f(float(np.mean(s["psnr_vs_ref"])), ".2f"),
                                                                 f(float(np.mean(s["ssim_vs_ref"])), ".4f")]
    delta = ["-", "-"] if ref_s is None else [f"{float(np.mean(s['psnr'] - ref_s['psnr'])):+.2f}",
                                              f"{float(np.mean(s['ssim'] - ref_s['ssim'])):+.4f}"]
    if "consistency_error" not in s:
        cons = "-"
    elif task == "inpaint":
        cons = f"{float(np.max(s['consistency_error'])):.2e}"
    else:
        cons = f"{float(np.mean(s['consistency_error'])):.2e}"
    lp = f"{float(np.mean(s['lpips'])):.4f}" if "lpips" in s else "-"
    return [label + (" (reference)" if is_ref else ""), steps, mode, f(float(np.mean(s["psnr"])), ".2f"),
            f"{float(np.mean(s['ssim'])):.4f}", lp, f"{float(np.mean(s['accutance'])):.3f}",
            f"{float(np.mean(s['gradient_ratio'])):.3f}", *agree, *delta, cons,
            "-" if seconds is None else f"{seconds:.2f}"]


def markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|---|---:|---|" + "---:|" * (len(COLUMNS) - 3)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def csv_text(rows: list[list[str]]) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    w.writerows(rows)
    return buf.getvalue()


def fewest(steps: list[int], ok: list[bool]) -> str:
    """'N' for the fewest qualifying step count, noting larger counts that fail; 'not reached up to M' otherwise."""
    good = [n for n, k in zip(steps, ok) if k]
    if not good:
        return f"not reached up to {max(steps)}"
    first = good[0]
    fails = [n for n, k in zip(steps, ok) if n > first and not k]
    return f"{first}" + (f" (not at {', '.join(map(str, fails))})" if fails else "")


def summary_lines(groups: dict[tuple[str, str], list[tuple[int, dict[str, np.ndarray]]]],
                  refs: dict[str, dict[str, np.ndarray]], floors: dict[str, dict[str, float]], ref_label: str) -> list[str]:
    """Per (mode, sampler): fewest steps matching the reference within the tolerances, and agreeing with it."""
    out = []
    for (mode, label), items in groups.items():
        items = sorted(items, key=lambda t: t[0])
        steps = [n for n, _ in items]
        ref = refs[mode]
        dp = [float(np.mean(s["psnr"] - ref["psnr"])) for _, s in items]
        ds = [float(np.mean(s["ssim"] - ref["ssim"])) for _, s in items]
        match = fewest(steps, [abs(a) <= PSNR_TOL and abs(b) <= SSIM_TOL for a, b in zip(dp, ds)])
        no_worse = fewest(steps, [a >= -PSNR_TOL and b >= -SSIM_TOL for a, b in zip(dp, ds)])
        line = (f"{label} [{mode}]: fewest steps within {PSNR_TOL} dB PSNR and {SSIM_TOL} SSIM of {ref_label} "
                f"(scores vs truth): {match}; no worse than it by more than that: {no_worse}")
        if mode in floors:
            fl = floors[mode]
            agree = fewest(steps, [float(np.mean(s["psnr_vs_ref"])) >= fl["psnr"] and float(np.mean(s["ssim_vs_ref"])) >= fl["ssim"]
                                   for _, s in items])
            line += (f"\n    fewest steps whose output agrees with the reference at least as well as a second reference draw "
                     f"(PSNR >= {fl['psnr']:.2f} dB, SSIM >= {fl['ssim']:.4f} vs the reference): {agree}")
        out.append(line)
    return out


def jsonable(s: dict[str, np.ndarray]) -> dict[str, list[float | None]]:
    return {k: [float(x) if math.isfinite(float(x)) else None for x in np.atleast_1d(v)] for k, v in s.items()}


# ----------------------------------------------------------------------------- main

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="an SR, denoising or inpainting meddiff checkpoint (file, folder, run, latest)")
    ap.add_argument("--slices", type=int, default=4, help="held-out Colin27 slices, evenly spaced (default 4)")
    ap.add_argument("--runs", nargs="+", default=["ancestral:5,10,20,50,100,250,1000", "ddim:3,5,10,20,50", "dpm_solver_pp:3,5,10,20"],
                    metavar="SAMPLER[@OPT]:STEPS,...", help="sampler runs (see above)")
    ap.add_argument("--reference", default="ancestral:2000", metavar="SAMPLER[@OPT]:STEPS", help="reference chain (default ancestral:2000)")
    ap.add_argument("--consistency", default=None, help="comma-separated modes: none, project, final, repaint "
                    "(default none,project,final; denoising: none)")
    ap.add_argument("--resample", type=int, default=1, metavar="U", help="repaint only: network calls per step (default 1)")
    ap.add_argument("--spread", action="store_true", help="also run the reference with seed+1 (seed-to-seed floor)")
    ap.add_argument("--seed", type=int, default=0, help="sampler seed (per-slice seeds as meddiff sample)")
    ap.add_argument("--data-seed", type=int, default=1234, help="seed of the denoising noise / inpainting masks")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--prepared", type=Path, default=None, help="prepared Colin27 folder (created if missing)")
    ap.add_argument("--cache", type=Path, default=None, help="folder to keep each run's outputs (.npy) for reruns")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default runs/bench_sampling_<task>)")
    ap.add_argument("--dry-run", action="store_true", help="print the jobs and the time estimate, run nothing")
    ap.add_argument("--student", action="append", default=[], metavar="NAME=PATH",
                    help="a distilled student of the checkpoint (objective distill) to measure beside it with its stored "
                         "sampler (e.g. student, 1 call), same seeds; repeatable")
    ap.add_argument("--lpips", action="store_true", help="also the shift-tolerant LPIPS distance to the truth (offline weights)")
    return ap.parse_args(argv)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.slices < 1 or args.batch_size < 1:
        raise InputError(f"--slices {args.slices} / --batch-size {args.batch_size}: expected >= 1")
    model_file = resolve_model_file(args.checkpoint)  # resolve once: a `latest` pointer may move on during training
    ckpt_hash = file_sha256(model_file)
    cfg, _, denoiser = load_model(model_file)
    if file_sha256(model_file) != ckpt_hash:
        raise InputError(f"{model_file} changed while it was read; try again")
    task = cfg.task.kind
    T = cfg.diffusion.timesteps
    variance = cfg.diffusion.variance
    modes = (args.consistency or ("none" if task == "denoise" else "none,project,final")).split(",")
    for m in modes:
        if m not in MODES:
            raise InputError(f"--consistency {m!r}: expected some of {list(MODES)}")
        check_request(task, "project" if m == "final" else m, args.resample if m == "repaint" else 1)
    if args.resample != 1 and "repaint" not in modes:
        raise InputError(f"--resample {args.resample} applies to --consistency repaint only")
    runs = [r for spec in args.runs for r in parse_runs(spec, variance, T)]
    ref_runs = parse_runs(args.reference, variance, T)
    if len(ref_runs) != 1:
        raise InputError(f"--reference {args.reference!r}: expected one step count")
    ref_run = ref_runs[0]
    run_modes = [m for m in modes if m != "final"]
    if "final" in modes and "none" not in run_modes:
        run_modes.insert(0, "none")  # 'final' is computed from the 'none' outputs

    out_dir = args.out or Path(f"runs/bench_sampling_{task}")
    prepared = args.prepared or ((args.cache / f"colin27_{cfg.data.size}") if args.cache else out_dir / "prepared_colin27")
    x0, names = held_out_slices(prepared, cfg.data.size, args.slices)
    inp = make_inputs(cfg.task, x0, args.data_seed)
    inp.sources = names
    runner = Runner(denoiser, inp, cfg, args, ckpt_hash)
    students = [load_student(spec, cfg, inp, args) for spec in args.student]

    def score(out: torch.Tensor, ref: torch.Tensor | None) -> dict[str, np.ndarray]:
        return scores(inp, out, ref, lpips=args.lpips)

    # every sampler job (deduplicated; the reference may also be one of the runs)
    jobs: list[Job] = []
    skipped: list[str] = []
    for m in run_modes:
        for r in [*runs, ref_run]:
            if m == "repaint" and r.sampler != "ancestral":
                skipped.append(f"{r.name(variance)} {r.steps} [repaint]")
                continue
            jobs.append(Job(r, m, args.seed))
        if args.spread and not (m == "repaint" and ref_run.sampler != "ancestral"):
            jobs.append(Job(ref_run, m, args.seed + 1))
    jobs = list(dict.fromkeys(jobs))
    todo = sorted((j for j in jobs if not runner.cached(j)), key=runner.calls)
    calls = sum(runner.calls(j) for j in todo)
    print(f"checkpoint {args.checkpoint} -> {model_file} (sha256 {ckpt_hash[:16]}), task {task}, "
          f"{len(names)} Colin27 slices {tuple(x0.shape[-2:])}, seed {args.seed}, {torch.get_num_threads()} thread(s)")
    print(f"{len(jobs)} sampler runs, {len(jobs) - len(todo)} cached; to compute: {len(todo)} runs, {calls} network calls "
          f"(each on all {len(names)} slices)" + (f"; skipped {', '.join(skipped)}" if skipped else ""), flush=True)
    if todo:
        per_call = probe_seconds_per_call(denoiser, inp, args.batch_size)
        print(f"probe: {per_call:.3f} s per network call -> estimated {calls * per_call / 60:.1f} min", flush=True)
    if args.dry_run:
        for j in todo:
            print(f"  would run {j.run.name(variance)} {j.run.steps} steps [{j.mode}] seed {j.seed}")
        return 0

    t_start = time.perf_counter()
    left = calls
    for k, j in enumerate(todo):
        print(f"  [{k + 1}/{len(todo)}] {j.run.name(variance)} {j.run.steps} steps [{j.mode}]"
              + (f" seed {j.seed}" if j.seed != args.seed else "") + " ...", flush=True)
        _, sec, _ = runner.get(j)
        left -= runner.calls(j)
        spc = runner.seconds_done / runner.calls_done
        print(f"      {sec:.2f} s per slice; measured {spc:.3f} s per call -> {left} calls left, ~{left * spc / 60:.1f} min",
              flush=True)

    # scores
    rows: list[list[str]] = []
    record: dict[str, object] = {
        "checkpoint": str(args.checkpoint), "model_file": str(model_file), "sha256": ckpt_hash, "task": task,
        "step": None, "slices": names, "size": list(x0.shape[-2:]), "seed": args.seed, "data_seed": args.data_seed,
        "reference": args.reference, "consistency": modes, "resample": args.resample, "threads": torch.get_num_threads(),
        "torch": torch.__version__, "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "when": time.strftime("%Y-%m-%d %H:%M:%S"), "baselines": {}, "runs": []}
    try:
        from safetensors import safe_open

        with safe_open(str(model_file), "pt") as f:
            record["step"] = (f.metadata() or {}).get("step")
    except Exception:  # noqa: BLE001 - informative only
        pass

    baselines: dict[str, torch.Tensor] = {}
    if task == "sr":
        baselines["bicubic" if cfg.task.sr_upsample == "bicubic" else cfg.task.sr_upsample] = inp.degraded
        if any(m in ("project", "final") for m in modes):
            baselines["bicubic, projected onto A x = y"] = sr_project(inp.degraded, inp.lowres)
    elif task == "denoise":
        from scipy.ndimage import median_filter

        baselines["noisy input"] = inp.degraded
        baselines["median filter 3x3"] = torch.from_numpy(np.stack([median_filter(a, size=3, mode="reflect") for a in inp.degraded.numpy()]))
    else:
        baselines["condition (holes at 0)"] = inp.degraded
    for name, img in baselines.items():
        s = score(img, None)
        rows.append(row_cells(name, "-", "-", s, None, task, None))
        record["baselines"][name] = jsonable(s)

    refs: dict[str, dict[str, np.ndarray]] = {}
    floors: dict[str, dict[str, float]] = {}
    groups: dict[tuple[str, str], list[tuple[int, dict[str, np.ndarray]]]] = {}
    ref_label = f"{ref_run.name(variance)} {ref_run.steps}"
    for m in modes:
        base_mode = "none" if m == "final" else m
        post = (lambda o: make_consistent(inp, o)) if m == "final" else (lambda o: o)
        if m == "repaint" and ref_run.sampler != "ancestral":
            print(f"  no {m} reference: {ref_label} is not ancestral")
            continue
        ref_out, ref_sec, _ = runner.get(Job(ref_run, base_mode, args.seed))
        ref_out = post(ref_out)
        ref_s = score(ref_out, ref_out)
        refs[m] = ref_s
        mode_runs = [r for r in runs if not (m == "repaint" and r.sampler != "ancestral")]
        first = {}  # sampler configurations in the order given, each by steps
        for i, r in enumerate(runs):
            first.setdefault((r.sampler, r.options), i)
        for r in sorted(set(mode_runs), key=lambda r: (first[(r.sampler, r.options)], r.steps)):
            o, sec, cached = runner.get(Job(r, base_mode, args.seed))
            s = score(post(o), ref_out)
            is_ref = r == ref_run
            rows.append(row_cells(r.name(variance), str(r.steps), m, s, ref_s, task, sec, is_ref))
            groups.setdefault((m, r.name(variance)), []).append((r.steps, s))
            record["runs"].append({"sampler": r.sampler, "label": r.name(variance), "options": r.kwargs, "steps": r.steps,
                                   "consistency": m, "seed": args.seed, "seconds_per_slice": sec, "cached": cached,
                                   "reference": is_ref, "per_slice": jsonable(s)})
        if ref_run not in mode_runs:
            rows.append(row_cells(ref_run.name(variance), str(ref_run.steps), m, ref_s, ref_s, task, ref_sec, True))
            record["runs"].append({"sampler": ref_run.sampler, "label": ref_run.name(variance), "options": ref_run.kwargs,
                                   "steps": ref_run.steps, "consistency": m, "seed": args.seed, "seconds_per_slice": ref_sec,
                                   "reference": True, "per_slice": jsonable(ref_s)})
        for st in students if m != "repaint" else []:
            o, sec, cached = st.runner.get(Job(st.run, base_mode, args.seed))
            s, label = score(post(o), ref_out), f"{st.run.sampler} {st.name}"
            rows.append(row_cells(label, str(st.run.steps), m, s, ref_s, task, sec))
            groups.setdefault((m, label), []).append((st.run.steps, s))
            record["runs"].append({"sampler": st.run.sampler, "label": label, "student": st.name, "model_file": str(st.file),
                                   "sha256": st.sha256, "steps": st.run.steps, "consistency": m, "seed": args.seed,
                                   "seconds_per_slice": sec, "cached": cached, "reference": False, "per_slice": jsonable(s)})
        if args.spread:
            o2, sec2, _ = runner.get(Job(ref_run, base_mode, args.seed + 1))
            s2 = score(post(o2), ref_out)
            floors[m] = {"psnr": float(np.mean(s2["psnr_vs_ref"])), "ssim": float(np.mean(s2["ssim_vs_ref"]))}
            rows.append(row_cells(f"{ref_run.name(variance)}, seed {args.seed + 1}", str(ref_run.steps), m, s2, ref_s, task, sec2))
            record["runs"].append({"sampler": ref_run.sampler, "label": ref_run.name(variance), "options": ref_run.kwargs,
                                   "steps": ref_run.steps, "consistency": m, "seed": args.seed + 1, "seconds_per_slice": sec2,
                                   "reference": False, "spread": True, "per_slice": jsonable(s2)})
    truth_s = score(inp.truth, None)
    rows.append(row_cells("ground truth", "-", "-", truth_s, None, task, None))

    table = markdown(rows)
    summary = summary_lines(groups, refs, floors, ref_label)
    if not args.spread:
        summary.append("agreement criterion: not evaluated (needs --spread: the agreement of a second reference draw is "
                       "the floor; without it no threshold on 'PSNR vs ref' is meaningful for stochastic references)")
    notes = [
        f"checkpoint `{args.checkpoint}` (sha256 {ckpt_hash[:16]}, step {record['step']}), task {task}; "
        f"{len(names)} held-out Colin27 slices {tuple(x0.shape[-2:])}: {', '.join(names)}.",
        f"sampler seed {args.seed} (per-slice seeds as meddiff sample), data seed {args.data_seed}; reference {ref_label} "
        f"with the same seeds, per consistency mode; metrics on [-1, 1] images (data range 2), means over slices.",
        *[f"student `{st.name}`: {st.file} (sha256 {st.sha256[:16]}), its sampler {st.run.sampler} {st.run.steps}, "
          "the same per-slice seeds" for st in students],
        f"{torch.get_num_threads()} torch thread(s); s/slice is wall time as first computed (cached runs keep it), "
        "on a CPU possibly shared with other jobs.",
    ]
    md = ("# Sampling benchmark\n\n" + "\n".join(f"- {n}" for n in notes) + "\n\n" + table + "\n"
          + "\n".join(f"- {line}" for line in summary) + "\n\n`" + str(record["command"]) + "`\n")
    record["summary"] = summary
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "sampling.md", md)
    atomic_write_text(out_dir / "sampling.csv", csv_text(rows))
    atomic_write_text(out_dir / "sampling.json", json.dumps(record, indent=1, allow_nan=False) + "\n")
    print()
    print(table)
    print("\n".join(summary))
    print(f"\nwrote {out_dir}/sampling.md, .csv, .json in {time.perf_counter() - t_start:.0f} s of sampling")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except MeddiffError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
