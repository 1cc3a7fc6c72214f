"""Volumes restored slice by slice: coherence across slices, in-plane and through-plane x4.

Held-out real volumes the shipped SR model never saw (it was trained on MNI152 slices only):

    colin27 axial   the shipped Colin27 axial stack (1 x 1 mm in-plane, slices every 3 mm)
    colin27 coronal the shipped Colin27 coronal stack, used for through-plane SR along S-I
                    (its rows are 1 mm apart, so the thin-slice truth is real)
    epi             nibabel's test volume example4d.nii.gz, frame 0 (T2* EPI brain, 2 x 2 x 2.2 mm)

Cases (each volume [D0, D1, D2], intensities min/max-normalised to [-1, 1] per volume as
`meddiff prepare` does, --slices planes along D0 from the middle):

    in-plane x4     each D0 slice degraded as meddiff.data.degrade.SuperResolution (anti-aliased
                    bicubic down, bicubic up); methods: bicubic, the 2D model slice by slice with
                    independent noise and with shared noise (meddiff.volume_noise).
    through-plane x4  thick slices along D1 (mean of 4 neighbouring thin slices, meddiff.data.thick),
                    interpolated back along D1: linear, cubic ("bicubic"); the 2D model applied to the
                    D0 planes (the reformats that contain the thick-slice axis: coronal for colin27,
                    coronal and sagittal for epi), with independent and shared noise.

Columns: PSNR / SSIM (dB / 1, data range 2) averaged over the planes along each axis (p0 = the
planes the model restored, p1, p2 = the reformats); "ez/bic": the through-plane error along the
slice axis z (in-plane: D0; through-plane: the thick axis D1) relative to bicubic's; "e0/bic" the
same along D0 (across the planes restored one by one; meddiff.metrics.volume); wall time; peak
resident memory during the method (VmHWM after resetting it via /proc/self/clear_refs).

    python benchmarks/volumes.py --slices 16 --steps 10 --threads 1 --out runs/bench_volumes
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
from meddiff.data.thick import thick_slice_condition
from meddiff.inference import restore
from meddiff.io import read_volume
from meddiff.metrics.volume import plane_metrics, through_plane_error

CHECKPOINT = Path(__file__).resolve().parents[1] / "src/meddiff/checkpoints/demo_sr_x4.safetensors"


@dataclass
class Case:
    name: str
    truth: np.ndarray            # [D0, D1, D2] in [-1, 1]
    cond: np.ndarray             # the 2D model's condition, planes along D0
    baselines: dict[str, np.ndarray]
    spacing: tuple[float, float, float]
    z_axis: int                  # the slice axis the through-plane error is measured along
    results: dict[str, tuple[np.ndarray, float, float]] = field(default_factory=dict)


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


def inplane_case(name: str, volume: np.ndarray, spacing, n: int) -> Case:
    truth = normalised(middle(volume, n))
    cond = SuperResolution(4.0)(torch.from_numpy(truth)[:, None])[0][:, 0].numpy()
    return Case(name, truth, cond, {"bicubic": cond}, spacing, z_axis=0)


def through_case(name: str, volume: np.ndarray, spacing, n: int) -> Case:
    """volume [D0, D1, D2] with the thick-slice axis D1 (cropped to a multiple of 4)."""
    vol = middle(volume, n)[:, : volume.shape[1] // 4 * 4]
    truth = normalised(vol)
    t = torch.from_numpy(truth).double()
    cubic = thick_slice_condition(t, 4, 1, "cubic").clamp(-1, 1).float().numpy()
    linear = thick_slice_condition(t, 4, 1, "linear").float().numpy()
    return Case(name, truth, cubic, {"bicubic": cubic, "linear": linear}, spacing, z_axis=1)


def build_cases(n: int, wanted: list[str]) -> list[Case]:
    colin = samples_dir("colin27") / "colin27"
    epi, epi_sp = epi_volume()  # [z, y, x]; for reformats: z flipped so the top row is superior
    epi_z_up = epi[::-1]
    makers = {
        "colin27-inplane": lambda: inplane_case("colin27-inplane", read_volume(colin / "axial.nii.gz").array, (3.0, 1.0, 1.0), n),
        "colin27-through": lambda: through_case("colin27-through", read_volume(colin / "coronal.nii.gz").array, (3.0, 1.0, 1.0), n),
        "epi-inplane": lambda: inplane_case("epi-inplane", epi, epi_sp, n),
        "epi-through-cor": lambda: through_case("epi-through-cor", epi_z_up.transpose(1, 0, 2), (epi_sp[1], epi_sp[0], epi_sp[2]), n),
        "epi-through-sag": lambda: through_case("epi-through-sag", epi_z_up.transpose(2, 0, 1), (epi_sp[2], epi_sp[0], epi_sp[1]), n),
    }
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


def run_model(case: Case, denoiser, noise: str, steps: int, seed: int) -> None:
    reset_peak()
    t0 = time.perf_counter()
    out = restore(denoiser, torch.from_numpy(case.cond)[:, None], sampler="dpm_solver_pp", steps=steps, seed=seed,
                  batch_size=4, noise=noise, progress=False, grid="logsnr")
    case.results[f"2D {noise}"] = (out[0, :, 0].numpy(), time.perf_counter() - t0, peak_mb())


def score(case: Case) -> list[list[str]]:
    """One table row per method of `case`."""
    rows, ref = [], case.baselines["bicubic"]
    ref_z, ref_0 = through_plane_error(ref, case.truth, case.z_axis), through_plane_error(ref, case.truth, 0)
    methods = {k: (v, float("nan"), float("nan")) for k, v in case.baselines.items()} | case.results
    for name, (vol, seconds, mb) in methods.items():
        cells = [case.name, name]
        for axis in range(3):
            p, s = plane_metrics(vol, case.truth, axis, 2.0)
            cells.append(f"{p:.2f} / {s:.3f}")
        cells += [f"{through_plane_error(vol, case.truth, case.z_axis) / ref_z:.3f}",
                  f"{through_plane_error(vol, case.truth, 0) / ref_0:.3f}",
                  "-" if np.isnan(seconds) else f"{seconds:.1f}", "-" if np.isnan(mb) else f"{mb:.0f}"]
        rows.append(cells)
    return rows


def markdown(rows: list[list[str]]) -> str:
    head = ["case", "method", "p0 PSNR/SSIM", "p1 PSNR/SSIM", "p2 PSNR/SSIM", "ez/bic", "e0/bic", "time s", "peak MB"]
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
    ap.add_argument("--checkpoint", default=str(CHECKPOINT))
    ap.add_argument("--slices", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cases", nargs="+", default=["colin27-inplane", "colin27-through", "epi-inplane", "epi-through-cor", "epi-through-sag"])
    ap.add_argument("--out", type=Path, default=Path("runs/bench_volumes"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from meddiff.diffusion.checkpoint import load_model

    _, _, denoiser = load_model(args.checkpoint, expect_task="sr")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for case in build_cases(args.slices, args.cases):
        for noise in ("independent", "shared"):
            run_model(case, denoiser, noise, args.steps, args.seed)
        figure(case, args.out / f"{case.name}.png")
        rows += score(case)
        print(markdown(score(case)), flush=True)
    table = markdown(rows)
    print(f"\nDPM-Solver++ {args.steps} steps (log-SNR grid), seed {args.seed}, {args.slices} planes, {args.threads} thread(s)")
    print(table)
    (args.out / "volumes.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
