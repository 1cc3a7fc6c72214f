"""Volumes restored slice by slice: coherence across slices, in-plane and through-plane x4.

Held-out real volumes the shipped SR model never saw (it was trained on MNI152 slices only):

    colin27 axial   the shipped Colin27 axial stack (1 x 1 mm in-plane, slices every 3 mm)
    colin27 coronal the shipped Colin27 coronal stack, used for through-plane SR along S-I
                    (its rows are 1 mm apart, so the thin-slice truth is real)
    epi             nibabel's test volume example4d.nii.gz, frame 0 (T2* EPI brain, 2 x 2 x 2.2 mm)
    colin27 1 mm    Colin27 as a whole 1 mm volume (ch2.nii.gz of Debian's mricron-data, not skull-stripped;
                    `apt install mricron-data`): axial slices 1 mm apart, for 2.5D models whose neighbours
                    are then as close as in a thin-slice series

Cases (each volume [D0, D1, D2], intensities min/max-normalised to [-1, 1] per volume as
`meddiff prepare` does, --slices planes along D0 from the middle):

    in-plane x4     each D0 slice degraded as meddiff.data.degrade.SuperResolution (anti-aliased
                    bicubic down, bicubic up); methods: bicubic, the 2D model slice by slice with
                    independent noise and with shared noise (meddiff.samplers.noise).
    through-plane x4  thick slices along D1 (mean of 4 neighbouring thin slices, meddiff.data.thick),
                    interpolated back along D1: linear, cubic ("bicubic"); the 2D model applied to the
                    D0 planes (the reformats that contain the thick-slice axis: coronal for colin27,
                    coronal and sagittal for epi), with independent and shared noise.

Models (--checkpoint NAME=PATH, repeatable; a bare PATH is named "2D"), each through the restore
pipeline's models (meddiff.restore.restorers.ddpm_restorer, so as `meddiff sample` runs them):
    2D in-plane     slice by slice along D0, with independent and with shared noise ("NAME independent",
                    "NAME shared"); on through-plane cases it restores the D0 planes as above
    2.5D in-plane   (task.context_slices) slice by slice along D0 with its neighbours, shared noise
    3D in-plane     the whole volume (overlapping 3D windows when it does not fit, --max-memory)
    thick-slice     (task.sr_axis through; 2D or 3D) through-plane cases only, slices along the thick axis D1
A model is left out of the cases it was not made for (a thick-slice model of in-plane cases; 3D in-plane
models of through-plane cases).

Columns: PSNR / SSIM (dB / 1, data range 2) averaged over the planes along each axis (p0 = the
planes the 2D model restored, p1, p2 = the reformats); Dice p0/p1/p2: the shipped tissue segmenter
(meddiff.downstream.Segmenter) on every plane along each axis, turned upright (metrics.volume.plane_dice),
against its segmentation of the truth; "ez/bic": the through-plane error along the slice axis z
(in-plane: D0; through-plane: the thick axis D1) relative to bicubic's; "e0/bic" the same along D0
(across the planes restored one by one; meddiff.metrics.volume); wall time; peak resident memory
during the method (VmHWM after resetting it via /proc/self/clear_refs; torch and the model included).

    python benchmarks/volumes.py --slices 16 --steps 10 --threads 1 --out runs/bench_volumes
    python benchmarks/volumes.py --checkpoint 2D=src/meddiff/checkpoints/demo_sr_x4.safetensors \
        --checkpoint 2.5D=sr_x4_2p5d --checkpoint 3D=runs/volume_3d_thick_x4 --out runs/bench_volumes
    python benchmarks/volumes.py --slices 12 --steps 2 --cases epi-inplane --out /tmp/bv   # smoke
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from meddiff.data.degrade import SuperResolution
from meddiff.data.normalise import Normalisation
from meddiff.data.samples import samples_dir
from meddiff.data.thick import thick_slice_condition, thick_slices
from meddiff.io import read_volume
from meddiff.metrics.volume import plane_dice, plane_metrics, through_plane_error

CHECKPOINT = Path(__file__).resolve().parents[1] / "src/meddiff/checkpoints/demo_sr_x4.safetensors"


@dataclass
class Case:
    name: str
    truth: np.ndarray            # [D0, D1, D2] in [-1, 1]
    cond: np.ndarray             # the 2D model's condition, planes along D0
    baselines: dict[str, np.ndarray]
    spacing: tuple[float, float, float]
    z_axis: int                  # the slice axis the through-plane error is measured along
    codes: tuple[str, str, str]  # where each axis points (nibabel.aff2axcodes letters), to show planes upright
    lowres: np.ndarray           # what was measured: low-resolution D0 slices, or thick slices along D1
    results: dict[str, tuple[np.ndarray, float, float]] = field(default_factory=dict)

    @property
    def through(self) -> bool:
        return self.z_axis == 1


def normalised(array: np.ndarray) -> np.ndarray:
    return Normalisation.from_arrays([array]).forward(array.astype(np.float64)).astype(np.float32)


def middle(array: np.ndarray, n: int, axis: int = 0) -> np.ndarray:
    start = max(0, (array.shape[axis] - n) // 2)
    return np.take(array, np.arange(start, min(array.shape[axis], start + n)), axis=axis)


def epi_volume() -> tuple[np.ndarray, tuple[float, float, float]]:
    """example4d frame 0 as [z, y, x]: rows anterior -> posterior, columns right -> left flipped to RAS-like display."""
    import nibabel as nib
    from nibabel.testing import data_path

    img = nib.load(os.path.join(data_path, "example4d.nii.gz"))
    if nib.aff2axcodes(img.affine) != ("L", "A", "S"):
        raise SystemExit(f"example4d.nii.gz: expected LAS orientation, got {nib.aff2axcodes(img.affine)}")
    arr = np.asarray(img.dataobj[..., 0], np.float32).transpose(2, 1, 0)[:, ::-1, ::-1]  # z, y (A at top), x (R first)
    zooms = img.header.get_zooms()
    return np.ascontiguousarray(arr), (float(zooms[2]), float(zooms[1]), float(zooms[0]))


def inplane_case(name: str, volume: np.ndarray, spacing, n: int, codes) -> Case:
    truth = normalised(middle(volume, n))
    deg = SuperResolution(4.0)
    lowres = deg.downsample(torch.from_numpy(truth)[:, None])
    cond = deg.upsample(lowres, truth.shape[1:])[:, 0].numpy()
    return Case(name, truth, cond, {"bicubic": cond}, spacing, 0, codes, lowres[:, 0].numpy())


def through_case(name: str, volume: np.ndarray, spacing, n: int, codes) -> Case:
    """volume [D0, D1, D2] with the thick-slice axis D1 (cropped to a multiple of 4)."""
    vol = middle(volume, n)[:, : volume.shape[1] // 4 * 4]
    truth = normalised(vol)
    t = torch.from_numpy(truth).double()
    cubic = thick_slice_condition(t, 4, 1, "cubic").clamp(-1, 1).float().numpy()
    linear = thick_slice_condition(t, 4, 1, "linear").float().numpy()
    return Case(name, truth, cubic, {"bicubic": cubic, "linear": linear}, spacing, 1, codes,
                thick_slices(t, 4, 1).float().numpy())


COLIN27_1MM = Path("/usr/share/mricron/templates/ch2.nii.gz")  # Debian mricron-data: Colin27, 1 mm


def colin27_1mm() -> np.ndarray:
    """Colin27 at 1 mm as [z, y, x]: slices inferior -> superior, rows anterior at the top, columns left -> right."""
    import nibabel as nib

    if not COLIN27_1MM.is_file():
        raise SystemExit(f"{COLIN27_1MM} not found: case colin27-1mm-inplane needs Debian's mricron-data (apt install mricron-data)")
    img = nib.as_closest_canonical(nib.load(str(COLIN27_1MM)))  # RAS: [x R, y A, z S]
    return np.ascontiguousarray(np.asarray(img.dataobj, np.float32).transpose(2, 1, 0)[:, ::-1])


def build_cases(n: int, wanted: list[str]) -> list[Case]:
    colin = samples_dir("colin27") / "colin27"
    epi, epi_sp = epi_volume()  # [z, y, x]; for reformats: z flipped so the top row is superior
    epi_z_up = epi[::-1]
    makers = {  # axis codes: the Colin27 stacks' own (aff2axcodes); the EPI's after epi_volume's flips (LAS -> S, P, R)
        "colin27-inplane": lambda: inplane_case("colin27-inplane", read_volume(colin / "axial.nii.gz").array, (3.0, 1.0, 1.0), n,
                                                ("S", "P", "R")),
        "colin27-through": lambda: through_case("colin27-through", read_volume(colin / "coronal.nii.gz").array, (3.0, 1.0, 1.0), n,
                                                ("A", "I", "R")),
        "epi-inplane": lambda: inplane_case("epi-inplane", epi, epi_sp, n, ("S", "P", "R")),
        "epi-through-cor": lambda: through_case("epi-through-cor", epi_z_up.transpose(1, 0, 2), (epi_sp[1], epi_sp[0], epi_sp[2]), n,
                                                ("P", "I", "R")),
        "epi-through-sag": lambda: through_case("epi-through-sag", epi_z_up.transpose(2, 0, 1), (epi_sp[2], epi_sp[0], epi_sp[1]), n,
                                                ("R", "I", "P")),
    }
    makers["colin27-1mm-inplane"] = lambda: inplane_case("colin27-1mm-inplane", colin27_1mm(), (1.0, 1.0, 1.0), n, ("S", "P", "R"))
    unknown = set(wanted) - set(makers)
    if unknown:
        raise SystemExit(f"--cases {sorted(unknown)}: expected some of {sorted(makers)}")
    return [makers[k]() for k in wanted]


def reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass(frozen=True)
class Model:
    """One --checkpoint entry: its name, path and slice layout (meddiff.restore.volume.Layout)."""

    name: str
    path: str
    layout: object

    def runs(self, case: Case) -> list[str]:
        """The noise modes to run on `case` ([] = not made for it): 2D in-plane models both, others one."""
        lay = self.layout
        if lay.thick:
            return ["shared"] if case.through else []
        if lay.spatial_dims == 3:
            return [] if case.through else ["shared"]
        return ["independent", "shared"] if not lay.context else ["shared"]

    def label(self, noise: str) -> str:
        return f"{self.name} {noise}" if self.layout.slicewise and not self.layout.context else self.name


def load_models(entries: list[str]) -> list[Model]:
    """--checkpoint entries NAME=PATH (or PATH, named 2D) with their layouts."""
    from meddiff.checkpointing.named import model_config, resolve_checkpoint
    from meddiff.restore.volume import layout_of

    models = []
    for entry in entries:
        name, _, path = entry.rpartition("=") if "=" in entry else ("2D", "", entry)
        path = str(resolve_checkpoint(path))
        models.append(Model(name, path, layout_of(model_config(path))))
    return models


def run_model(case: Case, model: Model, noise: str, args) -> None:
    """Restore `case` with `model` as `meddiff sample` would, timing it and its peak memory."""
    from meddiff.restore.files import Request
    from meddiff.restore.restorers import ddpm_restorer

    default = args.sampler == "default"  # each checkpoint's stored sampler, steps and grid (as `meddiff sample`)
    req = Request(output=args.out, checkpoint=model.path, sampler=None if default else args.sampler,
                  steps=None if default else args.steps, grid=None if default else "logsnr",
                  seed=args.seed, noise=noise, progress=False, max_memory=args.max_memory, batch_size=4)
    reset_peak()
    t0 = time.perf_counter()
    run = ddpm_restorer(req, "cpu").restore_slices
    planes, lowres = torch.from_numpy(case.cond)[:, None], torch.from_numpy(case.lowres)[:, None]
    if model.layout.thick:  # slices along the thick axis D1
        planes, lowres = planes.movedim(2, 0).movedim(1, 2), lowres.movedim(2, 0).movedim(1, 2)
    out = run(planes, lowres, Path(case.name), None)[0, :, 0]
    vol = out.movedim(0, 1) if model.layout.thick else out
    case.results[model.label(noise)] = (vol.clamp(-1, 1).numpy(), time.perf_counter() - t0, peak_mb())


def score(case: Case, segment) -> list[list[str]]:
    """One table row per method of `case`."""
    rows, ref = [], case.baselines["bicubic"]
    ref_z, ref_0 = through_plane_error(ref, case.truth, case.z_axis), through_plane_error(ref, case.truth, 0)
    methods = {k: (v, float("nan"), float("nan")) for k, v in case.baselines.items()} | case.results
    for name, (vol, seconds, mb) in methods.items():
        cells = [case.name, name]
        for axis in range(3):
            p, s = plane_metrics(vol, case.truth, axis, 2.0)
            cells.append(f"{p:.2f} / {s:.3f}")
        dice = [plane_dice(vol, case.truth, axis, segment, case.codes, case.spacing) for axis in range(3)]
        cells += [" / ".join(f"{d:.3f}" for d in dice),
                  f"{through_plane_error(vol, case.truth, case.z_axis) / ref_z:.3f}",
                  f"{through_plane_error(vol, case.truth, 0) / ref_0:.3f}",
                  "-" if np.isnan(seconds) else f"{seconds:.1f}", "-" if np.isnan(mb) else f"{mb:.0f}"]
        rows.append(cells)
    return rows


def markdown(rows: list[list[str]]) -> str:
    head = ["case", "method", "p0 PSNR/SSIM", "p1 PSNR/SSIM", "p2 PSNR/SSIM", "Dice p0/p1/p2", "ez/bic", "e0/bic",
            "time s", "peak MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def figure(case: Case, path: Path) -> None:
    """Rows: truth and each method; columns: the middle plane along D0, D1, D2 (aspect from the spacing)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vols = {"truth": case.truth} | case.baselines | {k: v[0] for k, v in case.results.items()}
    fig, axes = plt.subplots(len(vols), 3, figsize=(9, 2.6 * len(vols)), squeeze=False)
    sp = case.spacing
    aspects = (sp[1] / sp[2], sp[0] / sp[2], sp[0] / sp[1])  # rows / columns of each plane in mm
    for r, (name, vol) in enumerate(vols.items()):
        for axis in range(3):
            img = np.take(vol, vol.shape[axis] // 2, axis=axis)
            ax = axes[r, axis]
            ax.imshow(img, cmap="gray", vmin=-1, vmax=1, aspect=aspects[axis], interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(f"{name}: plane {axis}", fontsize=8)
    fig.suptitle(f"{case.name} (plane 0 = restored slices; z axis = D{case.z_axis})", fontsize=9)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", action="append", default=None,
                    help=f"NAME=PATH (or PATH, named 2D) of a 2D, 2.5D, 3D or thick-slice model; repeatable (default 2D={CHECKPOINT.name})")
    ap.add_argument("--slices", type=int, default=16)
    ap.add_argument("--sampler", default="dpm_solver_pp",
                    help="sampler of every model (with --steps, log-SNR grid); 'default': each checkpoint's stored sampler "
                         "and steps, as `meddiff sample` uses them (posterior_mean for sr_x4_general and sr_x4_2p5d)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-memory", default=None, help="as meddiff sample --max-memory (3D models: window size)")
    ap.add_argument("--cases", nargs="+", default=["colin27-inplane", "colin27-through", "epi-inplane", "epi-through-cor", "epi-through-sag"]
                    + (["colin27-1mm-inplane"] if COLIN27_1MM.is_file() else []))
    ap.add_argument("--out", type=Path, default=Path("runs/bench_volumes"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from meddiff.downstream import Segmenter

    models = load_models(args.checkpoint or [f"2D={CHECKPOINT}"])
    segment = Segmenter.load()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for case in build_cases(args.slices, args.cases):
        for model in models:
            for noise in model.runs(case):
                run_model(case, model, noise, args)
        figure(case, args.out / f"{case.name}.png")
        case_rows = score(case, segment)
        rows += case_rows
        print(markdown(case_rows), flush=True)
    table = markdown(rows)
    names = ", ".join(f"{m.name} = {m.path}" for m in models)
    print(f"\nDPM-Solver++ {args.steps} steps (log-SNR grid), seed {args.seed}, {args.slices} planes, {args.threads} thread(s); {names}")
    print(table)
    (args.out / "volumes.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
