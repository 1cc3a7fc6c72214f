"""Killed runs (issue 28, K2-K4): a `meddiff sample` killed with SIGKILL leaves a folder marked unfinished,
and the same command completes it, writing only what is missing, to the bytes of an uninterrupted run;
the temporary folders of a killed `prepare` and the temporary files of killed writes inside a folder are
removed by the next run, and a live process's never are.

The kills are real (SIGKILL, no clean-up handler runs): a child process runs the CLI with one function
wrapped to kill itself at a fixed point.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from meddiff.cli import main
from meddiff.io import Volume, write_volume
from meddiff.io.atomic import owner_tag
from meddiff.io.outdir import MARKER, marker
from meddiff.restore.resume import DONE_LOG

from .test_sample import make_checkpoint

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ck_kill"), identity=True)


def _inputs(folder: Path, n: int = 4) -> Path:
    rng = np.random.default_rng(3)
    for k in range(n):
        a = rng.uniform(0, 200, (16, 16)).astype(np.float32)
        write_volume(Volume(a, (1.0, 1.0), np.eye(4), f"p{k}", Path("x"), {}), folder / f"img{k}.nii.gz")
    return folder


def _images(out: Path) -> dict[str, bytes]:
    """The image files of an output folder (sidecars carry the time of writing)."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.nii.gz"))}


def _sample_args(ckpt: Path, inp: Path, out: Path, *extra: str) -> list[str]:
    return ["sample", "--checkpoint", str(ckpt), "--input", str(inp), "--output", str(out), "--steps", "2",
            "--no-progress", "--device", "cpu", *extra]


def _killed(code: str, argv: list[str]) -> subprocess.CompletedProcess:
    """Run the CLI in a child that executes `code` first (which wraps a function to SIGKILL itself)."""
    script = textwrap.dedent(code) + f"\nfrom meddiff.cli import main\nmain({argv!r})\n"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)


KILL_AFTER_TWO_INPUTS = """
import os, signal
from meddiff.restore import resume
real = resume.DoneLog.record
def record(self, *a, **k):
    real(self, *a, **k)
    if len(self.path.read_text().splitlines()) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
resume.DoneLog.record = record
"""


def test_killed_sample_is_unfinished_and_the_same_command_completes_it(tmp_path, ckpt, capsys):
    inp = _inputs(tmp_path / "in")
    ref = tmp_path / "ref"
    assert main(_sample_args(ckpt, inp, ref)) == 0
    assert marker(ref)["complete"] is True and not (ref / DONE_LOG).exists()

    out = tmp_path / "out"
    child = _killed(KILL_AFTER_TWO_INPUTS, _sample_args(ckpt, inp, out))
    assert child.returncode == -9, child.stderr
    doc = marker(out)
    assert doc["verb"] == "sample" and doc["complete"] is False  # a killed folder does not look finished
    assert len(_images(out)) == 2 and len((out / DONE_LOG).read_text().splitlines()) == 2
    kept = {name: (out / name).stat().st_mtime_ns for name in _images(out)}

    other = _sample_args(ckpt, inp, out)
    other[other.index("--steps") + 1] = "3"
    assert main(other) == 2  # other settings: not the same run, so not completed with them
    assert "unfinished `meddiff sample` run" in capsys.readouterr().err

    assert main(_sample_args(ckpt, inp, out)) == 0
    assert "2 of 4 inputs were already done" in capsys.readouterr().out
    assert _images(out) == _images(ref)  # the completed folder is the uninterrupted run's, bit for bit
    assert all((out / name).stat().st_mtime_ns == t for name, t in kept.items())  # done inputs were not redone
    assert marker(out)["complete"] is True and not (out / DONE_LOG).exists()
    assert main(_sample_args(ckpt, inp, out)) == 2  # finished: a third run is refused as before
    assert "--overwrite" in capsys.readouterr().err


def test_a_folder_a_running_meddiff_writes_is_refused(tmp_path, ckpt, capsys):
    inp = _inputs(tmp_path / "in", 1)
    out = tmp_path / "out"
    out.mkdir()
    host = owner_tag().partition("@")[2]
    (out / MARKER).write_text(json.dumps({"written_by": "meddiff", "verb": "sample", "complete": False,
                                          "run": "x", "owner": f"m1@{host}"}))  # pid 1 runs
    assert main(_sample_args(ckpt, inp, out, "--overwrite")) == 2
    assert "still running (process m1@" in capsys.readouterr().err


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_overwrite_removes_what_killed_writes_left_inside_and_keeps_a_live_ones(tmp_path, ckpt):
    inp = _inputs(tmp_path / "in", 1)
    out = tmp_path / "out"
    assert main(_sample_args(ckpt, inp, out)) == 0
    host = owner_tag().partition("@")[2]
    dead = out / "sub" / f".series_restored.m{_dead_pid()}@{host}.abcdefgh.tmp"
    dead.mkdir(parents=True)
    (dead / "slice_0001.dcm").write_bytes(b"DICM" * 10)  # a truncated DICOM of the killed write
    legacy = out / f".img0_restored.nii.gz.abcdefgh.tmp.nii.gz"  # an older meddiff's name (no owner)
    legacy.write_bytes(b"\x1f\x8b")
    live = out / "sub" / f".other.nii.gz.m1@{host}.abcdefgh.tmp.nii.gz"  # pid 1's: a live owner
    live.write_bytes(b"live")
    assert main(_sample_args(ckpt, inp, out, "--overwrite")) == 0
    assert not dead.exists() and not legacy.exists() and live.read_bytes() == b"live"


KILL_DURING_PREPARE = """
import os, signal
from meddiff.data import prepare
real = prepare._prepare_patient
def patient(*a, **k):
    rows = real(*a, **k)
    os.kill(os.getpid(), signal.SIGKILL)
prepare._prepare_patient = patient
"""


def test_a_killed_prepares_temporary_folder_is_removed_by_the_next_prepare(tmp_path):
    from .test_output_folders import _images as pngs

    inp = pngs(tmp_path / "in", 3)
    out = tmp_path / "prep"
    argv = ["prepare", str(inp), str(out), "--size", "16", "--min-foreground", "0", "--no-progress"]
    child = _killed(KILL_DURING_PREPARE, argv)
    assert child.returncode == -9, child.stderr
    left = [p for p in tmp_path.iterdir() if p.name.startswith(".prep.")]
    assert left and not out.exists()  # the kill left its temporary folder beside the output
    host = owner_tag().partition("@")[2]
    live = tmp_path / f".prep.m1@{host}.abcdefgh.tmp"  # a running prepare's (pid 1 runs): never touched
    live.mkdir()
    assert main(argv) == 0
    assert (out / "manifest.csv").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".prep.")] == [live.name]
