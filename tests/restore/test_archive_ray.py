"""--engine ray on a local 2-CPU Ray cluster (one cluster for the module; skipped without ray):
40 units mixing DICOM series, NIfTI and PNG (one corrupt), restored with the one-call model.

- the outputs equal --engine local's bit for bit (DICOM: pixel data and positions), the corrupt unit
  is in failed.csv and the other 39 are done;
- a worker killed with SIGKILL mid-run: the run completes, every unit done exactly once, no
  temporary or duplicate file, the same images;
- a re-run over the finished folder restores nothing, starts no worker and opens no input (the
  corrupt unit's failure record matches its unchanged bytes: listed again, not re-read).
"""

from __future__ import annotations

import builtins
import csv
import os
import signal
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from meddiff.checkpointing.named import resolve_checkpoint  # noqa: E402
from meddiff.restore import Request  # noqa: E402
from meddiff.restore.archive import ArchiveOptions, run_archive  # noqa: E402
from meddiff.restore.engines.ray_engine import RayEngine  # noqa: E402
from meddiff.restore.resume import settings_key  # noqa: E402

from .conftest import assert_same_images, image_outputs  # noqa: E402

MODEL = "sr_x4_general_1step"


@pytest.fixture(scope="module")
def cluster():
    before = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # a throwaway local cluster: no token file written
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
    os.environ.pop("RAY_AUTH_MODE") if before is None else os.environ.__setitem__("RAY_AUTH_MODE", before)


def request(inp: Path, out: Path) -> Request:
    return Request(output=out, input=inp, checkpoint=str(resolve_checkpoint(MODEL)), progress=False)


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def local(archive40, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local40") / "out"
    s = run_archive(request(archive40, out), ArchiveOptions(engine="local"))
    assert (s.done, s.failed) == (39, 1)
    return out


@pytest.fixture(scope="module")
def on_ray(cluster, archive40, local, tmp_path_factory):
    out = tmp_path_factory.mktemp("ray40") / "out"
    return out, run_archive(request(archive40, out), ArchiveOptions(engine="ray", workers=2))


def check_exactly_once(out: Path, local: Path) -> None:
    units = rows(out / "manifest.csv")
    done = sorted(p.stem for p in (out / ".units").glob("*.json") if not p.name.endswith(".failed.json"))
    assert len(units) == 40 and len(done) == 39 and set(done) < {u["unit"] for u in units}
    assert not [p for p in out.rglob("*") if ".tmp" in p.name or ".old-" in p.name]
    assert_same_images(local, out)  # same names (no copies), same pixels
    [failed] = rows(out / "failed.csv")
    assert failed["source"].endswith("broken39.png") and "cannot read image" in failed["reason"]


def test_ray_outputs_equal_local_and_the_corrupt_unit_fails_alone(on_ray, local):
    out, summary = on_ray
    assert (summary.units, summary.done, summary.skipped, summary.failed) == (40, 39, 0, 1)
    assert len({r.worker for r in summary.results if r.ok}) == 2  # both workers restored units
    check_exactly_once(out, local)
    assert len(image_outputs(out)) == 13 * 3 + 13 + 13  # 13 series x 3 files, 13 NIfTI, 13 PNG (+ the corrupt one)


def test_a_worker_killed_mid_run_leaves_every_unit_done_once(cluster, archive40, local, tmp_path):
    out = tmp_path / "out"
    args = request(archive40, out)
    from meddiff.restore.archive import checkpoint_sha256

    engine = RayEngine(args, settings_key(args, checkpoint_sha256(args)), workers=2, retries=3)
    killed = []

    def killer():
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            done = len(list((out / ".units").glob("*.json"))) if (out / ".units").is_dir() else 0
            if done >= 8 and engine.pids:
                os.kill(engine.pids[0], signal.SIGKILL)
                killed.append(engine.pids[0])
            time.sleep(0.02)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    summary = run_archive(args, ArchiveOptions(engine="ray"), engine=engine)
    t.join(5)
    assert killed, "the worker was not killed (the run ended first)"
    assert summary.lost_workers >= 1  # the killed worker held a unit
    assert (summary.done, summary.failed) == (39, 1)
    assert sorted(r.unit for r in summary.results) == sorted(u["unit"] for u in rows(out / "manifest.csv"))
    check_exactly_once(out, local)


def test_rerun_on_ray_restores_nothing_and_opens_no_input(on_ray, archive40, monkeypatch):
    out, _ = on_ray
    real_open = builtins.open
    root = archive40.resolve()

    def guarded(file, *a, **k):
        if isinstance(file, (str, os.PathLike)) and Path(file).resolve().is_relative_to(root):
            raise AssertionError(f"input opened: {file}")
        return real_open(file, *a, **k)

    monkeypatch.setattr(builtins, "open", guarded)
    started = []
    monkeypatch.setattr(RayEngine, "run", lambda self, units, on_result: started.append(units))
    summary = run_archive(request(archive40, out), ArchiveOptions(engine="ray", workers=2))
    assert (summary.skipped, summary.failed, started) == (39, 1, [])  # the corrupt unit: its failure record matches
    assert rows(out / "failed.csv")[0]["reason"].startswith("unchanged since it failed: ")
