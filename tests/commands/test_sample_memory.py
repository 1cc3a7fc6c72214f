"""`meddiff sample` in bounded memory: tiled windows, the --max-memory refusal, the run summary."""

import pytest

from meddiff.cli import main
from meddiff.commands.demo import SAMPLED_CHECKPOINT
from meddiff.io import read_volume, write_volume

from .test_sample import real_lowres


def run(*args) -> int:
    return main(["sample", "--checkpoint", str(SAMPLED_CHECKPOINT), *map(str, args), "--steps", "3", "--no-progress", "--device", "cpu"])


@pytest.fixture()
def lowres(tmp_path):
    path = tmp_path / "lr.nii.gz"
    write_volume(real_lowres(), path)  # 3 slices of 16 x 16 -> 64 x 64
    return path


def test_tiled_run_writes_the_volume_and_a_one_line_summary(tmp_path, lowres, capsys):
    assert run("--input", lowres, "--output", tmp_path / "o", "--tile-size", "32", "--tile-overlap", "8") == 0
    out = capsys.readouterr().out
    assert "3 slices, 9 network calls" in out and "peak RSS" in out  # 3 slices x 3 steps
    (written,) = (tmp_path / "o").rglob("*.nii.gz")
    assert read_volume(written).shape == (3, 64, 64)


@pytest.mark.parametrize("extra,message", [(["--max-memory", "1MB"], "raise --max-memory"),
                                           (["--max-memory", "lots"], "--max-memory: memory size 'lots'"),
                                           (["--tile-size", "0"], "--tile-size 0: expected a positive"),
                                           (["--tile-size", "32", "--tile-overlap", "20"], "--tile-overlap 20: expected at most half")])
def test_impossible_memory_or_tiles_are_refused(tmp_path, lowres, capsys, extra, message):
    assert run("--input", lowres, "--output", tmp_path / "o", *extra) == 2
    assert message in capsys.readouterr().err


def test_classical_run_summary_counts_slices_without_network_calls(tmp_path, lowres, capsys):
    assert main(["sample", "--method", "bicubic", "--input", str(lowres), "--output", str(tmp_path / "o"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "3 slices, " in out and "network calls" not in out and "peak RSS" in out
