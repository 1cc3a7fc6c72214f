"""Archive restoration: units/s and slices/s with 1 and 2 Ray workers, and the cost of a re-run.

Throughput: an archive of --units NIfTI volumes (--slices slices of --size x --size each) restored
x4 with the one-call model sr_x4_general_1step on one local Ray cluster (ray.init(num_cpus=2),
started once: its startup is reported apart). Modes alternate (ray1 ray2 local ray1 ray2 local
...) for --rounds rounds, each into a fresh output folder. Reported per mode (median over rounds):
wall seconds of run_archive (includes starting the actors and loading the model in each), the
steady rate (units and slices from the first finished unit to the last, over that time), the
ratio of each rate to 1 worker's, the CPU seconds a unit costs (process time of its worker) and
the share of a core each busy worker got (CPU time / wall time over its units: below 1 it waited
for a core, i.e. the machine, not the engine, limits the scaling).

Resume: an archive of --resume-units units (PNG images, NIfTI volumes and 3-file DICOM series)
restored once; then, alternating for --rounds rounds:
  rerun      `meddiff sample --engine local` again as a fresh process (imports included): the
             manifest's listing digest matches, no input is opened, every unit is skipped
  in-proc    the same through run_archive in this process (no imports)
  rescan     manifest*.csv/json deleted first: find_images again (DICOM headers read), every unit's
             content hashed, every done-sidecar compared (what a resume without a manifest costs)

    python benchmarks/archive.py                       # ~5 min on 2 busy cores
    python benchmarks/archive.py --units 12 --resume-units 100 --rounds 1   # a quick look
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODEL = "sr_x4_general_1step"


def make_volumes(root: Path, units: int, slices: int, size: int) -> Path:
    import nibabel as nib

    rng = np.random.default_rng(0)
    for n in range(units):
        folder = root / f"s{n // 10:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        vol = rng.normal(500, 100, (size, size, slices)).astype(np.float32)
        nib.save(nib.Nifti1Image(vol, np.diag([1.3, 1.3, 3.0, 1.0])), folder / f"v{n:04d}.nii.gz")
    return root


def make_mixed(root: Path, units: int) -> Path:
    """Units in turn: 7 PNG, 2 NIfTI, 1 DICOM series (3 files) per 10, 8x8 pixels."""
    import copy

    import nibabel as nib
    import pydicom
    from PIL import Image
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    rng = np.random.default_rng(0)
    for n in range(units):
        folder = root / f"p{n // 20:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        img = rng.uniform(0, 255, (8, 8))
        if n % 10 < 7:
            Image.fromarray(img.astype(np.uint8)).save(folder / f"i{n:04d}.png")
        elif n % 10 < 9:
            nib.save(nib.Nifti1Image(np.stack([img, img.T], -1).astype(np.float32), np.eye(4)), folder / f"v{n:04d}.nii.gz")
        else:
            uid = generate_uid()
            (folder / f"s{n:04d}").mkdir()
            for k in range(3):
                ds = copy.deepcopy(template)
                ds.SeriesInstanceUID, ds.SOPInstanceUID = uid, generate_uid()
                ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
                ds.ImageOrientationPatient, ds.ImagePositionPatient = [1, 0, 0, 0, 1, 0], [0, 0, 2.5 * k]
                ds.Rows = ds.Columns = 8
                ds.PixelData = (img + k).astype("<i2").tobytes()
                ds.save_as(folder / f"s{n:04d}" / f"{k}.dcm", enforce_file_format=True)
    return root


def request(inp: Path, out: Path):
    from meddiff.checkpointing.named import resolve_checkpoint
    from meddiff.restore import Request

    return Request(output=out, input=inp, checkpoint=str(resolve_checkpoint(MODEL)), progress=False)


class Timed:
    """An engine wrapper recording when each unit finished."""

    def __init__(self, engine):
        self.engine, self.times = engine, []

    @property
    def lost(self):
        return getattr(self.engine, "lost", 0)

    def run(self, units, on_result):
        def record(result):
            self.times.append(time.perf_counter())
            on_result(result)

        self.engine.run(units, record)


def throughput(mode: str, inp: Path, work: Path, device: str) -> dict:
    from meddiff.restore.archive import ArchiveOptions, checkpoint_sha256, run_archive
    from meddiff.restore.engines.local import LocalEngine
    from meddiff.restore.engines.ray_engine import RayEngine
    from meddiff.restore.resume import settings_key
    from meddiff.config.device import pick_device

    out = Path(tempfile.mkdtemp(dir=work)) / "out"
    args = request(inp, out)
    key = settings_key(args, checkpoint_sha256(args))
    inner = LocalEngine(args, key, pick_device(device)) if mode == "local" else RayEngine(args, key, workers=int(mode[-1]))
    engine = Timed(inner)
    t0 = time.perf_counter()
    summary = run_archive(args, ArchiveOptions(), engine=engine)
    wall = time.perf_counter() - t0
    assert summary.failed == 0 and summary.done > 1, summary.line()
    span = engine.times[-1] - engine.times[0]
    per_unit = summary.slices / summary.done
    ok = [r for r in summary.results if r.ok]
    workers = len({r.worker for r in ok})
    shutil.rmtree(out.parent)
    return {"wall": wall, "units_s": (summary.done - 1) / span, "slices_s": (summary.done - 1) * per_unit / span,
            "cpu_unit": statistics.median(r.cpu_seconds for r in ok),  # CPU seconds one unit costs
            "cpu_share": sum(r.cpu_seconds for r in ok) / sum(r.seconds for r in ok)}  # of a core, per busy worker


def cli_rerun(inp: Path, out: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "meddiff.cli", "sample", "--checkpoint", MODEL, "-i", str(inp), "-o", str(out),
                    "--engine", "local", "--no-progress"], check=True, capture_output=True,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    return time.perf_counter() - t0


def resume(inp: Path, out: Path, rounds: int) -> dict[str, list[float]]:
    from meddiff.restore.archive import ArchiveOptions, run_archive

    times: dict[str, list[float]] = {"rerun": [], "in-proc": [], "rescan": []}
    for _ in range(rounds):
        times["rerun"].append(cli_rerun(inp, out))
        t0 = time.perf_counter()
        s = run_archive(request(inp, out), ArchiveOptions())
        times["in-proc"].append(time.perf_counter() - t0)
        assert s.done == 0 and s.skipped == s.units, s.line()
        for p in list(out.glob("manifest*")):
            p.unlink()
        t0 = time.perf_counter()
        s = run_archive(request(inp, out), ArchiveOptions())
        times["rescan"].append(time.perf_counter() - t0)
        assert s.done == 0 and s.skipped == s.units, s.line()
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--units", type=int, default=40)
    ap.add_argument("--slices", type=int, default=4)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--resume-units", type=int, default=1000)
    ap.add_argument("--modes", default="ray1,ray2,local")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-resume", action="store_true")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    work = Path(tempfile.mkdtemp(prefix="meddiff-archive-bench-"))
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    try:
        if not a.skip_throughput:
            import ray

            inp = make_volumes(work / "vol", a.units, a.slices, a.size)
            t0 = time.perf_counter()
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            print(f"ray.init(num_cpus=2): {time.perf_counter() - t0:.1f} s")
            modes = a.modes.split(",")
            results: dict[str, list[dict]] = {m: [] for m in modes}
            for r in range(a.rounds):
                for m in modes:
                    results[m].append(throughput(m, inp, work, a.device))
                    x = results[m][-1]
                    print(f"  round {r + 1} {m}: wall {x['wall']:.1f} s, {x['units_s']:.2f} units/s, {x['slices_s']:.1f} slices/s, "
                          f"{x['cpu_unit']:.3f} CPU s/unit, {x['cpu_share']:.2f} core per worker", flush=True)
            ray.shutdown()
            med = {m: {k: statistics.median(x[k] for x in v) for k in v[0]} for m, v in results.items()}
            base = med.get("ray1")
            print(f"\n{a.units} units of {a.slices} slices {a.size}x{a.size} -> x4, {MODEL}, median of {a.rounds} alternating rounds")
            print(f"{'mode':8} {'wall s':>8} {'units/s':>9} {'slices/s':>9} {'vs ray1':>8} {'CPU s/unit':>11} {'core/worker':>12}")
            for m, x in med.items():
                ratio = f"{x['units_s'] / base['units_s']:.2f}x" if base else ""
                print(f"{m:8} {x['wall']:8.1f} {x['units_s']:9.2f} {x['slices_s']:9.1f} {ratio:>8} {x['cpu_unit']:11.3f} "
                      f"{x['cpu_share']:12.2f}")
        if not a.skip_resume:
            inp = make_mixed(work / "mixed", a.resume_units)
            out = work / "mixed_out"
            from meddiff.restore.archive import ArchiveOptions, run_archive

            t0 = time.perf_counter()
            s = run_archive(request(inp, out), ArchiveOptions())
            print(f"\nfirst run over {a.resume_units} units: {time.perf_counter() - t0:.1f} s ({s.line()})")
            times = resume(inp, out, a.rounds)
            print(f"{'re-run over ' + str(a.resume_units) + ' done units':40} {'median s':>9} {'all':>20}")
            for k, v in times.items():
                print(f"{k:40} {statistics.median(v):9.2f} {' '.join(f'{x:.2f}' for x in v):>20}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
