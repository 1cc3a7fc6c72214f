"""Baseline tables of Med-cDiff (issue 7): every method restores the same degraded Colin27 slices, then `meddiff evaluate`.

    python benchmarks/compare.py --task sr|denoise|inpaint [--method NAME=RUN ...] [--classical M ...]
                                 [--factors 2.83 4 5.66] [--slices 24] [--samples 1] [--seed 0]
                                 [--steps N] [--sampler NAME] [--batch-size 8] [--threads 1]
                                 [--out runs/compare_<task>] [--evaluate-args ARG ...]

Test set: the held-out Colin27 slices of benchmarks/dice_vs_factor.py (its fixed_slices, imported):
N/2 axial and N/2 coronal 128 x 128 slices in [-1, 1], named colin27_<orientation>_<index>.

Degradation (meddiff.data.degrade), the same input for every method:
  sr       per factor f (default 2 sqrt 2, 4, 4 sqrt 2): the measurement SuperResolution(f).downsample(x)
           (anti-aliased bicubic); group x<f> (x2.83, x4, x5.66).
  denoise  Denoise(noise_std, salt_pepper) of the task section of the first --method RUN (no RUN:
           configs/demo_denoise.yaml); group "denoise".
  inpaint  Inpaint(mask_kinds, mask_coverage) likewise (no RUN: configs/demo_inpaint.yaml); group "inpaint".
  Slice j is degraded with a torch generator seeded from (seed, j) on a stream of its own (not the
  stream of the samplers' noise), so a second call with the same --seed gives identical inputs.

Methods (restored in Python, never through `meddiff sample` files: its per-image min/max
renormalisation would change a noisy input's scale):
  NAME=RUN     a DDPM run (run folder, checkpoint folder or model.safetensors): meddiff.samplers.run.restore
               with the run's sampler and steps (--sampler/--steps override), on the condition of the run's
               own task at this factor (dataclasses.replace(cfg.task, sr_factor=f)); or a learned baseline
               run (pix2pix, SRGAN, UP-GAN, HPUNet): meddiff.baselines.registry.restore_baseline. Sample s of
               slice j uses meddiff.samplers.run.image_seed(seed, j, s). Inpainting: known pixels kept exactly.
  --classical  sr: bicubic, bilinear (meddiff.baselines.interpolation of the measurement); denoise: median,
               nlm; inpaint: biharmonic (meddiff.baselines.classical). Default: all of the task's.
  input        sr: nearest-neighbour upsampling of the measurement (its pixels at full size, as
               dice_vs_factor.py); denoise: the noisy image; inpaint: the image with holes set to 0.
--samples S > 1: a learned method whose S samples differ writes their mean as <slice>.nii.gz, the
per-pixel std as <slice>_std.nii.gz and each sample as <slice>_sample<k>.nii.gz (what `meddiff
evaluate` reads for its calibration table); a deterministic one (all samples equal) writes its
prediction only. A deterministic baseline with its own uncertainty (UP-GAN's predict_with_uncertainty)
also writes <slice>_std.nii.gz.

Writes OUT/<group>/{truth,input,<method>...}/<slice>.nii.gz (float32 in [-1, 1], identical names;
OUT/<group>/lowres/ the measurements for sr, OUT/<group>/mask/ the holes for inpaint, 1 = missing;
.nii.gz files an earlier call left in these folders are deleted first), OUT/timing.csv (seconds per
slice of each method, all S samples included), OUT/patients.csv (every slice: patient colin27), then runs

    meddiff evaluate --truth G=OUT/G/truth --pred NAME@G=OUT/G/NAME ... [--mask G=OUT/G/mask]
                     --patients OUT/patients.csv --out OUT/report [--evaluate-args ...]

(OUT/report/results_<G>.{md,csv,tex}, paired_<G>.*, report.html; the command is saved in
OUT/evaluate_command.txt). The first --method (else the first classical method) is the paired
reference. Prints the tables' paths and per learned method its training budget: the checkpoint's
step and the training seconds at that step (the run's train_log.csv, else the checkpoint's
train_state.json; "unknown" when neither exists, e.g. for an exported model file).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import re
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dice_vs_factor import factor_name, fixed_slices, write_slices  # noqa: E402  (benchmarks/ is not a package)

from meddiff.baselines.interpolation import interpolate_baseline  # noqa: E402
from meddiff.data.degrade import PAPER_SR_FACTORS, SuperResolution, build_degradation  # noqa: E402
from meddiff.errors import InputError, MeddiffError  # noqa: E402

TASKS = ("sr", "denoise", "inpaint")
CLASSICAL = {"sr": ("bicubic", "bilinear"), "denoise": ("median", "nlm"), "inpaint": ("biharmonic",)}
DEFAULT_TASK_CONFIG = {"denoise": "configs/demo_denoise.yaml", "inpaint": "configs/demo_inpaint.yaml"}
PAPER_FACTORS = PAPER_SR_FACTORS[:3]  # Med-cDiff's super-resolution table: 2 sqrt 2, 4, 4 sqrt 2
RESERVED = ("truth", "input", "mask", "lowres", "report")
DEGRADE_STREAM = 0x6465677261646521  # first entropy word of the degradation seeds ("degrade!"), apart from image_seed's
REPO = Path(__file__).resolve().parent.parent


@dataclasses.dataclass
class Learned:
    """A --method NAME=RUN loaded: kind "ddpm" (model = denoiser) or "baseline" (model = Baseline)."""

    name: str
    run: Path
    kind: str
    cfg: object
    model: object


@dataclasses.dataclass
class Restored:
    """One method's images of a group: prediction [N, 1, H, W]; std [N, 1, H, W] or None; samples [S, N, 1, H, W] or None."""

    pred: torch.Tensor
    std: torch.Tensor | None = None
    samples: torch.Tensor | None = None


# --------------------------------------------------------------------------- methods


def parse_method(spec: str) -> tuple[str, Path]:
    name, sep, run = spec.partition("=")
    if not sep or not name or not run:
        raise InputError(f"--method {spec!r}: expected NAME=RUN (e.g. meddiff=runs/demo_sr_multi)")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise InputError(f"--method {spec!r}: NAME {name!r} must be letters, digits, '.', '_' or '-' (it names a folder)")
    return name, Path(run)


def load_learned(name: str, run: Path, task: str) -> Learned:
    """Load NAME=RUN and check it restores `task` (InputError naming the run and both task kinds)."""
    from meddiff.baselines.registry import load_baseline
    from meddiff.checkpointing import BASELINE, VDM, format_of
    from meddiff.diffusion.checkpoint import load_model

    if not run.exists():
        raise InputError(f"--method {name}={run}: {run} does not exist; expected a run folder, checkpoint folder or "
                         "model.safetensors")
    if format_of(run) == VDM.name:
        raise InputError(f"--method {name}={run}: a VDM (unconditional generator) checkpoint, not a restoration model")
    if format_of(run) == BASELINE.name:
        cfg, model = load_baseline(run)
        kind = "baseline"
    else:
        cfg, _, model = load_model(run)
        kind = "ddpm"
    if cfg.task.kind != task:
        raise InputError(f"--method {name}={run}: this {kind} run was trained for task {cfg.task.kind!r}, "
                         f"but --task is {task!r}")
    return Learned(name, run, kind, cfg, model)


def method_task(m: Learned, factor: float | None):
    """The run's task config, at super-resolution factor `factor` when given."""
    return m.cfg.task if factor is None else dataclasses.replace(m.cfg.task, sr_factor=factor)


def trained_factors(m: Learned) -> tuple[float, ...]:
    return tuple(m.cfg.task.sr_factors) or (m.cfg.task.sr_factor,)


# --------------------------------------------------------------------------- degradation


def degrade_seed(seed: int, index: int) -> int:
    """Seed of slice `index`'s degradation (a stream apart from meddiff.samplers.run.image_seed's sampler noise)."""
    ss = np.random.SeedSequence([DEGRADE_STREAM, int(seed), int(index)])
    return int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))


def degrade(task_cfg, x: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(cond, mask) of every slice of x [N, 1, H, W], slice j drawn from its own generator (degrade_seed)."""
    deg = build_degradation(task_cfg)
    conds, masks = [], []
    for j in range(x.shape[0]):
        g = torch.Generator().manual_seed(degrade_seed(seed, j))
        c, m = deg(x[j: j + 1], generator=g)
        conds.append(c)
        masks.append(m)
    return torch.cat(conds), torch.cat(masks)


def task_config(task: str, learned: list[Learned]):
    """The task section that degrades denoise/inpaint inputs: the first run's, else the demo config's."""
    from meddiff import config as config_mod

    if learned:
        return learned[0].cfg.task, f"task of {learned[0].name} ({learned[0].run})"
    path = REPO / DEFAULT_TASK_CONFIG[task]
    return config_mod.load(path).task, f"task of {path.relative_to(REPO)}"


# --------------------------------------------------------------------------- restoration


def restore_learned(m: Learned, planes: torch.Tensor, *, samples: int, seed: int, batch_size: int,
                    steps: int | None, sampler: str | None) -> torch.Tensor:
    """[S, N, 1, H, W] restorations of the condition planes [N, C, H, W], clamped to [-1, 1]."""
    if m.kind == "ddpm":
        from meddiff.samplers.run import restore, sampler_options

        cfg = m.cfg
        name = sampler or cfg.sampler.name
        n_steps = steps or cfg.sampler.steps
        if not 1 <= n_steps <= cfg.diffusion.timesteps:
            raise InputError(f"--steps {n_steps}: {m.name} has {cfg.diffusion.timesteps} diffusion steps; expected 1..that")
        opts = sampler_options(name, cfg.diffusion.variance, cfg.sampler.eta, cfg.sampler.grid)
        out = restore(m.model, planes, sampler=name, steps=n_steps, samples=samples, seed=seed, batch_size=batch_size,
                      progress=False, **opts)
    else:
        from meddiff.baselines.registry import restore_baseline

        out = restore_baseline(m.model, planes, samples=samples, seed=seed, batch_size=batch_size)
    return out.clamp(-1.0, 1.0)


def baseline_std(m: Learned, planes: torch.Tensor, seed: int) -> torch.Tensor | None:
    """Per-pixel std [N, 1, H, W] of a deterministic baseline that estimates its own uncertainty
    (overrides predict_with_uncertainty and gives the same prediction under two seeds), else None."""
    from meddiff.baselines.base import Baseline
    from meddiff.samplers.run import pad_planes

    model = m.model
    if m.kind != "baseline" or type(model).predict_with_uncertainty is Baseline.predict_with_uncertainty:
        return None
    padded, (h, w) = pad_planes(planes, model.size_multiple)
    mask = padded[:, 1:2] if padded.shape[1] > 1 else torch.ones_like(padded[:, :1])
    with torch.no_grad():
        probe = [model.predict(padded[:1], mask[:1], torch.Generator().manual_seed(seed + k)) for k in (0, 1)]
        if not torch.equal(probe[0], probe[1]):
            return None  # stochastic: its spread is shown by --samples instead
        std = torch.cat([model.predict_with_uncertainty(padded[j: j + 1], mask[j: j + 1])[1] for j in range(len(padded))])
    return std[..., :h, :w].float()


def learned_images(m: Learned, planes: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor, args) -> Restored:
    """A learned method's Restored (module docstring: mean/std/samples when its samples differ)."""
    out = restore_learned(m, planes, samples=args.samples, seed=args.seed, batch_size=args.batch_size,
                          steps=args.steps, sampler=args.sampler)
    if args.task == "inpaint":  # known pixels are measurements: keep them exactly (as `meddiff sample`)
        out = out * mask + cond * (1 - mask)
    if args.samples > 1 and not all(torch.equal(out[0], s) for s in out[1:]):
        return Restored(out.mean(0), out.std(0, unbiased=True), out)
    return Restored(out[0], baseline_std(m, planes, args.seed))


def classical_images(method: str, task: str, cond: torch.Tensor, mask: torch.Tensor,
                     lr: torch.Tensor | None, size: tuple[int, int]) -> torch.Tensor:
    if task == "sr":
        return interpolate_baseline(lr, size, method)
    from meddiff.baselines.classical import classical_restore

    return classical_restore(method, cond, mask)[0]


# --------------------------------------------------------------------------- writing


def clear_images(group_dir: Path) -> None:
    """Delete the .nii.gz files a previous call left in group_dir/<folder>/ (other slices, stale _std/_sample
    files would be paired by `meddiff evaluate`); nothing else is touched."""
    for f in group_dir.glob("*/*.nii.gz"):
        f.unlink()


def write_restored(folder: Path, r: Restored, names: list[str], mm: list[float], description: str) -> None:
    write_slices(folder, r.pred, names, mm, description)
    if r.std is not None:
        write_slices(folder, r.std, names, mm, description + " std", "_std")
    if r.samples is not None:
        for k, s in enumerate(r.samples):
            write_slices(folder, s, names, mm, description + f" sample{k}", f"_sample{k}")


# --------------------------------------------------------------------------- budget


def budget(m: Learned) -> str:
    """'<steps> steps, <seconds> s training (<source>)' of the checkpoint the method uses, 'unknown' parts otherwise."""
    from safetensors import safe_open

    from meddiff.checkpointing import resolve_model_file

    file = resolve_model_file(m.run)
    with safe_open(str(file), framework="pt", device="cpu") as f:
        step_s = (f.metadata() or {}).get("step")
    step = int(step_s) if step_s and step_s.isdigit() else None
    seconds, source = None, ""
    ckpt = file.parent
    if ckpt.name.startswith("step_") and ckpt.parent.name == "checkpoints":
        log = ckpt.parent.parent / "train_log.csv"
        if log.is_file() and step is not None:
            with open(log, newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if r.get("step", "").isdigit() and r.get("elapsed_s")]
            at = [r for r in rows if int(r["step"]) == step]
            if at:
                seconds, source = float(at[-1]["elapsed_s"]), str(log)
        state = ckpt / "train_state.json"
        if seconds is None and state.is_file():
            info = json.loads(state.read_text())
            if "elapsed_s" in info:
                seconds, source = float(info["elapsed_s"]), str(state)
    steps_txt = f"{step} steps" if step is not None else "steps unknown"
    secs_txt = f"{seconds:.1f} s training ({source})" if seconds is not None else "training seconds unknown"
    return f"{m.name} ({m.kind}, {file}): {steps_txt}, {secs_txt}"


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", required=True, help="sr | denoise | inpaint")
    p.add_argument("--method", action="append", default=[], metavar="NAME=RUN",
                   help="a DDPM or learned-baseline run (run folder, checkpoint folder or model.safetensors); repeat")
    p.add_argument("--classical", nargs="*", default=None, metavar="M",
                   help="classical methods (sr: bicubic bilinear; denoise: median nlm; inpaint: biharmonic; "
                        "default: all of the task's; none: give --classical alone)")
    p.add_argument("--factors", type=float, nargs="+", default=list(PAPER_FACTORS),
                   help="sr: factors (default 2*sqrt(2) 4 4*sqrt(2))")
    p.add_argument("--slices", type=int, default=24,
                   help="even number of Colin27 slices, half axial half coronal (default 24)")
    p.add_argument("--samples", type=int, default=1, help="samples per slice of the learned methods (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the degradation and of the samplers (default 0)")
    p.add_argument("--steps", type=int, default=None, help="DDPM sampler steps (default: each run's)")
    p.add_argument("--sampler", default=None, help="DDPM sampler (default: each run's)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default runs/compare_<task>)")
    p.add_argument("--evaluate-args", nargs=argparse.REMAINDER, default=[],
                   help="everything after it goes to `meddiff evaluate` (e.g. --no-fid --lpips none); give it last")
    return p.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    if args.task not in TASKS:
        raise InputError(f"--task {args.task!r}: expected one of {', '.join(TASKS)}")
    if args.slices < 2 or args.slices % 2:
        raise InputError(f"--slices {args.slices}: expected an even number >= 2")
    if args.samples < 1:
        raise InputError(f"--samples {args.samples}: expected >= 1")
    if args.batch_size < 1:
        raise InputError(f"--batch-size {args.batch_size}: expected >= 1")
    if args.task == "sr":
        if bad := [f for f in args.factors if not f > 1]:
            raise InputError(f"--factors {bad}: expected factors > 1")
        if len({factor_name(f) for f in args.factors}) < len(args.factors):
            raise InputError(f"--factors {args.factors}: two factors give the same group name")
    if args.classical is None:
        args.classical = list(CLASSICAL[args.task])
    if bad := [c for c in args.classical if c not in CLASSICAL[args.task]]:
        raise InputError(f"--classical {' '.join(bad)}: not a classical method for --task {args.task}; "
                         f"expected some of {', '.join(CLASSICAL[args.task])}")
    if args.sampler is not None:
        from meddiff.samplers.registry import SAMPLERS

        if args.sampler not in SAMPLERS:
            raise InputError(f"--sampler {args.sampler}: expected one of {sorted(SAMPLERS)}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except MeddiffError as e:
        print(f"compare.py: error: {e}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    from meddiff.cli import main as meddiff_main

    check_args(args)
    torch.set_num_threads(args.threads)
    specs = [parse_method(s) for s in args.method]
    names = [n for n, _ in specs] + list(dict.fromkeys(args.classical))
    if clash := sorted({n for n in names if names.count(n) > 1 or n in RESERVED}):
        raise InputError(f"method name(s) {clash} used twice or reserved ({', '.join(RESERVED)}); rename with NAME=RUN")
    learned = [load_learned(n, r, args.task) for n, r in specs]
    classical = list(dict.fromkeys(args.classical))
    if not learned and not classical:
        raise InputError("no method: give --method NAME=RUN and/or --classical")
    out = args.out or Path(f"runs/compare_{args.task}")

    images, _, slice_names, mm = fixed_slices(args.slices)
    x = torch.from_numpy(images)[:, None].float()
    size = tuple(x.shape[-2:])
    groups = [factor_name(f) for f in args.factors] if args.task == "sr" else [args.task]
    base_task = None
    if args.task != "sr":
        base_task, where = task_config(args.task, learned)
        print(f"{args.task} degradation: {build_degradation(base_task)} ({where})")
    timing: list[dict] = []
    for gi, group in enumerate(groups):
        gdir = out / group
        f = args.factors[gi] if args.task == "sr" else None
        desc = f"meddiff {args.task} {group}"
        clear_images(gdir)
        lr = None
        if args.task == "sr":
            lr = SuperResolution(f).downsample(x)
            shown = interpolate_baseline(lr, size, "nearest")
            cond, mask = SuperResolution(f)(x)
            write_slices(gdir / "lowres", lr, slice_names, [s * size[0] / lr.shape[-2] for s in mm], desc + " lowres")
            for m in learned:
                if not any(abs(f - t) < 1e-3 * t for t in trained_factors(m)):
                    print(f"note: {m.name} was trained for {', '.join(f'x{t:.3g}' for t in trained_factors(m))}, "
                          f"run here at x{f:.3g}")
        else:
            cond, mask = degrade(base_task, x, args.seed)
            shown = cond
            if args.task == "inpaint":
                write_slices(gdir / "mask", mask, slice_names, mm, desc + " mask (1 = missing)")
        write_slices(gdir / "truth", x, slice_names, mm, desc + " truth")
        write_slices(gdir / "input", shown, slice_names, mm, desc + " input")
        print(f"[{group}] {len(slice_names)} slices -> {gdir}")
        for m in learned:
            deg = build_degradation(method_task(m, f))
            c = deg(x)[0] if args.task == "sr" else cond  # sr: the run's own upsampling of the same measurement
            planes = deg.model_condition(c, mask)
            t0 = time.perf_counter()
            r = learned_images(m, planes, cond, mask, args)
            dt = (time.perf_counter() - t0) / len(slice_names)
            write_restored(gdir / m.name, r, slice_names, mm, f"{desc} {m.name}")
            timing.append({"group": group, "method": m.name, "seconds_per_slice": dt, "samples": args.samples})
            wrote = "mean/std/samples" if r.samples is not None else "prediction and std" if r.std is not None else "prediction"
            print(f"  {m.name}: {dt:.3f} s/slice ({args.samples} sample(s); wrote {wrote})")
        for c_name in classical:
            t0 = time.perf_counter()
            img = classical_images(c_name, args.task, cond, mask, lr, size)
            dt = (time.perf_counter() - t0) / len(slice_names)
            write_slices(gdir / c_name, img, slice_names, mm, f"{desc} {c_name}")
            timing.append({"group": group, "method": c_name, "seconds_per_slice": dt, "samples": 1})
            print(f"  {c_name}: {dt:.4f} s/slice")
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "timing.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["group", "method", "seconds_per_slice", "samples"])
        w.writeheader()
        w.writerows(timing)
    with open(out / "patients.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "patient_id"])
        w.writerows([n, "colin27"] for n in slice_names)

    methods = [m.name for m in learned] + classical + ["input"]
    ev = ["evaluate", "--patients", str(out / "patients.csv"), "--out", str(out / "report"), "--no-progress"]
    for group in groups:
        ev += ["--truth", f"{group}={out / group / 'truth'}"]
        ev += [a for m in methods for a in ("--pred", f"{m}@{group}={out / group / m}")]
        if args.task == "inpaint":
            ev += ["--mask", f"{group}={out / group / 'mask'}"]
    ev += list(args.evaluate_args)
    (out / "evaluate_command.txt").write_text("meddiff " + shlex.join(ev) + "\n")
    print("meddiff " + shlex.join(ev), flush=True)
    rc = meddiff_main(ev)
    if rc != 0:
        print(f"compare.py: error: meddiff evaluate failed (exit {rc}); command in {out / 'evaluate_command.txt'}",
              file=sys.stderr)
        return rc
    print("\ntraining budget:")
    for m in learned:
        print("  " + budget(m))
    for c_name in classical:
        print(f"  {c_name}: classical, no training")
    print("\ntables:")
    for group in groups:
        print(f"  {out / 'report' / f'results_{group}.md'}")
    print(f"  report: {out / 'report' / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
