"""meddiff sample --engine local / --shard over a small archive (no Ray): the manifest, done-sidecars,
resume without reading inputs, changed settings, failures, shards, and a writer killed mid-unit."""

from __future__ import annotations

import builtins
import csv
import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from meddiff.checkpointing.named import resolve_checkpoint
from meddiff.cli import main
from meddiff.restore import Request
from meddiff.restore.archive import ArchiveOptions, run_archive

from .conftest import PATIENT, PATIENT_ID, assert_same_images, image_outputs, make_archive

MODEL = "sr_x4_general_1step"


def sample(inp: Path, out: Path, *extra: str) -> int:
    return main(["sample", "--checkpoint", MODEL, "-i", str(inp), "-o", str(out), "--no-progress", *extra])


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    """9 units without a corrupt one (the plain loop stops at a bad input)."""
    return make_archive(tmp_path_factory.mktemp("good") / "in", 9, corrupt=False)


@pytest.fixture(scope="module")
def plain(good, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("plain") / "out"
    assert sample(good, out) == 0
    return out


@pytest.fixture(scope="module")
def local(good, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "out"
    assert sample(good, out, "--engine", "local") == 0
    return out


def test_local_engine_writes_what_the_plain_loop_writes_plus_a_manifest(plain, local):
    assert assert_same_images(plain, local) == 15  # 3 series x 3 DICOM files, 3 NIfTI, 3 PNG
    units = rows(local / "manifest.csv")
    assert len(units) == 9 and len({u["unit"] for u in units}) == 9
    assert sorted(u["kind"] for u in units).count("dicom_series") == 3
    assert all(len(u["sha256"]) == 64 and len(u["stat_sha256"]) == 64 for u in units)
    assert {u["suffix"] for u in units if u["source"] == "p00/series0"} == {"", "_2"}  # two series, one folder
    assert sorted(p.stem for p in (local / ".units").iterdir()) == sorted(u["unit"] for u in units)
    assert rows(local / "failed.csv") == []
    text = "".join(p.read_text() for p in local.glob("manifest*"))
    names = " ".join(str(p) for p in local.rglob("*"))
    for secret in (PATIENT, PATIENT_ID, "Doe"):
        assert secret not in text and secret not in names
    doc = json.loads(next((local / ".units").iterdir()).read_text())
    key = doc["key"]
    assert len(key["checkpoint_sha256"]) == 64 and key["meddiff_version"] and len(key["input_sha256"]) == 64
    assert {"sampler", "steps", "seed", "precision", "samples", "format"} <= set(key["settings"])


def test_rerun_skips_every_unit_and_opens_no_input(good, local, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    shutil.copytree(local, out)
    before = {rel: p.read_bytes() for rel, p in image_outputs(out).items()}
    real_open = builtins.open

    def guarded(file, *a, **k):
        if isinstance(file, (str, os.PathLike)) and Path(file).resolve().is_relative_to(good.resolve()):
            raise AssertionError(f"input opened: {file}")
        return real_open(file, *a, **k)

    monkeypatch.setattr(builtins, "open", guarded)
    assert sample(good, out, "--engine", "local") == 0
    monkeypatch.undo()
    assert "9 units: 0 done, 9 skipped, 0 failed" in capsys.readouterr().out
    assert {rel: p.read_bytes() for rel, p in image_outputs(out).items()} == before


def test_changed_settings_redo_and_touched_or_changed_inputs_are_checked_by_hash(good, local, tmp_path, capsys):
    inp, out = tmp_path / "in", tmp_path / "out"
    shutil.copytree(good, inp)
    shutil.copytree(local, out)
    # the copy keeps sizes and mtimes, and the manifest holds relative paths: a moved archive still resumes
    assert sample(inp, out, "--engine", "local") == 0
    assert "0 done, 9 skipped" in capsys.readouterr().out
    png = sorted(inp.rglob("*.png"))
    os.utime(png[0], ns=(10**18, 10**18))  # only the mtime changes: hashed again, same content -> skipped
    Image.open(png[2]).save(png[1])  # another image under the same name: redone
    assert sample(inp, out, "--engine", "local") == 0
    assert "1 done, 8 skipped" in capsys.readouterr().out
    assert sample(inp, out, "--engine", "local", "--seed", "1") == 0
    assert "9 done, 0 skipped" in capsys.readouterr().out  # a new seed redoes every unit


def test_a_corrupt_unit_is_listed_in_failed_csv_and_the_others_finish(archive10, tmp_path, capsys):
    out = tmp_path / "out"
    assert sample(archive10, out, "--engine", "local") == 1
    assert "10 units: 9 done, 0 skipped, 1 failed" in capsys.readouterr().out
    [bad] = rows(out / "failed.csv")
    assert bad["source"].endswith("broken9.png") and "cannot read image" in bad["reason"] and bad["attempts"] == "1"
    assert len(list((out / ".units").glob("*.json"))) == 10 and len(list((out / ".units").glob("*.failed.json"))) == 1
    assert sample(archive10, out, "--engine", "local") == 1  # the same bytes and settings fail again: not re-read
    assert "10 units: 0 done, 9 skipped, 1 failed" in capsys.readouterr().out
    [again] = rows(out / "failed.csv")
    assert again["attempts"] == "0" and again["reason"].startswith("unchanged since it failed: ")


def test_two_shards_equal_one_run(good, local, tmp_path):
    out = tmp_path / "out"
    assert sample(good, out, "--shard", "1/2") == 0
    first = set(image_outputs(out))
    assert 0 < len(first) < len(image_outputs(local))
    assert sample(good, out, "--shard", "2/2") == 0
    assert_same_images(local, out)
    assert len(rows(out / "manifest.shard-1-of-2.csv")) == 9 and (out / "failed.shard-2-of-2.csv").is_file()
    assert sorted(p.name for p in (out / ".units").iterdir()) == sorted(p.name for p in (local / ".units").iterdir())


def test_a_writer_killed_mid_unit_leaves_nothing_half_written_after_the_rerun(good, local, tmp_path):
    """What kill -9 leaves: a product without its done-sidecar and a temporary of the next product."""
    out = tmp_path / "out"
    shutil.copytree(local, out)
    units = rows(out / "manifest.csv")
    victim = next(u for u in units if u["kind"] == "raster")
    (out / ".units" / f"{victim['unit']}.json").unlink()
    target = out / victim["output"]
    stale = target.parent / f".{target.name}.abcd_123.tmp.png"
    stale.write_bytes(b"half a PNG")
    stale_json = target.parent / f".{target.stem}.json.zz99zz99.tmp.json"
    stale_json.write_text("{")
    stale_mark = out / ".units" / f".{victim['unit']}.json.q1w2e3r4.tmp.json"  # the done-sidecar's own temporary
    stale_mark.write_text("{")
    other = target.parent / ".unrelated.abcdefgh.tmp.png"  # not this unit's: left alone
    other.write_bytes(b"x")
    request = Request(output=out, input=good, checkpoint=str(resolve_checkpoint(MODEL)), progress=False)
    summary = run_archive(request, ArchiveOptions(engine="local"))
    assert (summary.done, summary.skipped, summary.failed) == (1, 8, 0)
    assert not stale.exists() and not stale_json.exists() and not stale_mark.exists() and other.exists()
    other.unlink()
    assert not [p for p in out.rglob(".*.tmp*")]
    assert_same_images(local, out)


def test_archive_options_are_checked(good, tmp_path, capsys):
    assert sample(good, tmp_path / "a", "--shard", "3/2") == 2
    assert "expected 1 <= I <= N" in capsys.readouterr().err
    assert sample(good, tmp_path / "b", "--workers", "2") == 2
    assert "--engine ray only" in capsys.readouterr().err
    assert sample(good / "p00" / "img2.png", tmp_path / "c", "--engine", "local") == 2
    assert "expected a folder" in capsys.readouterr().err
    assert sample(good, good / "out", "--engine", "local") == 2  # never inside the input folder
    assert "inside the input folder" in capsys.readouterr().err


def test_a_worker_with_another_checkpoint_file_refuses_to_start(good, tmp_path):
    from meddiff.errors import CheckpointError
    from meddiff.restore.archive import checkpoint_sha256
    from meddiff.restore.resume import settings_key
    from meddiff.restore.units import UnitWorker

    args = Request(output=tmp_path / "out", input=good, checkpoint=str(resolve_checkpoint(MODEL)), progress=False)
    key = settings_key(args, checkpoint_sha256(args))
    UnitWorker(args, key, "cpu")  # the same file: starts
    with pytest.raises(CheckpointError, match="expected the same model file on every node"):
        UnitWorker(args, {**key, "checkpoint_sha256": "0" * 64}, "cpu")
