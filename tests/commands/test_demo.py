"""`meddiff demo` end to end on the shipped Colin27 slices, with a checkpoint whose answer is known.

The identity checkpoint (residual x0-prediction, zero output conv) returns the bicubic
condition exactly, so the demo's meddiff rows must equal its bicubic row, every per-pixel
std is zero, and the report must hold what the table says. The default model is the one
models.yaml recommends (sr_x4_general, one call), whose report shows its calibrated interval,
the coverage and the reliability diagram on the held-out slices.
"""

import csv
import os
import re

import numpy as np
import pytest

from pathlib import Path

from meddiff.cli import main
from meddiff.errors import CheckpointError
from meddiff.checkpointing.named import resolve_checkpoint
from meddiff.data.dataset import load_prepared
from meddiff.data.degrade import SuperResolution
from meddiff.metrics.image import psnr

from .test_sample import make_checkpoint


@pytest.fixture(scope="module")
def identity_ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ck_id"), identity=True)


def read_rows(path):
    return {r["method"]: r for r in csv.DictReader(open(path))}


def test_demo_with_identity_model_reports_bicubic_for_meddiff_and_zero_std(tmp_path, identity_ckpt):
    out = tmp_path / "demo"
    args = ["demo", "--checkpoint", str(identity_ckpt), "--out", str(out), "--slices", "2", "--samples", "2",
            "--steps", "3", "--no-progress"]
    assert main(args) == 0
    rows = read_rows(out / "results.csv")
    assert set(rows) == {"bilinear", "bicubic", "meddiff (1 sample)", "meddiff (mean of 2)"}
    psnr_cols = [k for k in rows["bicubic"] if k.startswith("psnr") and "mean" in k]
    assert psnr_cols, rows["bicubic"].keys()
    for col in rows["bicubic"]:
        if col.endswith("_mean"):
            assert float(rows["meddiff (1 sample)"][col]) == pytest.approx(float(rows["bicubic"][col]), abs=1e-5), col
            assert float(rows["meddiff (mean of 2)"][col]) == pytest.approx(float(rows["bicubic"][col]), abs=1e-5), col
    # bicubic PSNR recomputed independently from the prepared slices the demo used
    prep = load_prepared(out / "prepared_colin27")
    test = prep.arrays["test"]
    idx = np.linspace(0, len(test) - 1, 2).round().astype(int)
    import torch

    x0 = torch.from_numpy(np.asarray(test[idx], dtype=np.float32))[:, None]
    deg = SuperResolution(4.0, "bicubic")
    bic = torch.nn.functional.interpolate(deg.downsample(x0), size=x0.shape[-2:], mode="bicubic", align_corners=False).clamp(-1, 1)
    expected = np.mean([psnr(bic[i, 0].numpy(), x0[i, 0].numpy(), data_range=2.0) for i in range(2)])
    assert float(rows["bicubic"][psnr_cols[0]]) == pytest.approx(expected, abs=1e-4)
    html = (out / "report.html").read_text()
    assert "meddiff mean of 2" in html and "predicted std" in html  # the std maps sit in the grid, under their errors
    assert (out / "std_maps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "results.md").read_text().count("\n| ") >= 4

    # a second run reuses the prepared slices instead of preparing again
    stamp = os.stat(out / "prepared_colin27" / "manifest.csv").st_mtime_ns
    assert main(args[:-1] + ["--samples", "1", "--no-progress"]) == 2  # not empty: --overwrite needed
    assert main(args[:-1] + ["--samples", "1", "--no-progress", "--overwrite"]) == 0
    assert os.stat(out / "prepared_colin27" / "manifest.csv").st_mtime_ns == stamp
    assert set(read_rows(out / "results.csv")) == {"bilinear", "bicubic", "meddiff (1 sample)"}
    assert not (out / "std_maps.png").exists()  # the first run's, not this one's: removed


@pytest.mark.parametrize("bad", [["--slices", "0"], ["--samples", "0"], ["--steps", "0"], ["--steps", "21"]])
def test_demo_refuses_bad_counts(tmp_path, identity_ckpt, bad, capsys):
    assert main(["demo", "--checkpoint", str(identity_ckpt), "--out", str(tmp_path / "d"), "--no-progress", *bad]) != 0
    assert bad[0] in capsys.readouterr().err


def test_demo_refuses_a_checkpoint_of_another_task(tmp_path, capsys):
    ck = make_checkpoint(tmp_path / "ck", task="denoise")
    assert main(["demo", "--checkpoint", str(ck), "--out", str(tmp_path / "d"), "--no-progress"]) != 0
    assert "trained for task 'denoise'" in capsys.readouterr().err


def test_demo_measures_uncertainty_calibration_when_samples_differ(tmp_path):
    ck = make_checkpoint(tmp_path / "ck")  # random output layer: samples differ
    out = tmp_path / "demo"
    assert main(["demo", "--checkpoint", str(ck), "--out", str(out), "--slices", "1", "--samples", "4",
                 "--steps", "2", "--no-progress"]) == 0
    rows = list(csv.DictReader(open(out / "calibration.csv")))
    assert [r["method"] for r in rows] == ["std of 4 samples", "binned by an independent half"]
    prep = load_prepared(out / "prepared_colin27")
    foreground = int((np.asarray(prep.arrays["test"][0]) > -0.99).sum())
    assert all(int(r["pixels"]) == foreground for r in rows)  # background (exactly -1) left out
    assert all(float(r["rmv"]) > 0 and -1 <= float(r["spearman"]) <= 1 for r in rows)
    assert (out / "calibration.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Uncertainty calibration" in (out / "report.html").read_text()
    # no stored interval calibration: the reliability of mean +- 1.645 x the spread's predicted error, said to be uncalibrated
    md = (out / "reliability.md").read_text()
    assert "sample spread x1.645 (not calibrated)" in md
    deciles = list(csv.DictReader(open(out / "reliability.csv")))
    assert len(deciles) == 10 and all(np.isfinite(float(d["ratio"])) and float(d["predicted_rms"]) > 0 for d in deciles)
    html = (out / "report.html").read_text()
    assert "nothing calibrated" in html and "Reliability on the held-out slices" in html
    assert not (out / "interval_maps.png").exists()


def test_demo_with_identical_samples_says_there_is_no_calibration(tmp_path, identity_ckpt):
    out = tmp_path / "demo"
    assert main(["demo", "--checkpoint", str(identity_ckpt), "--out", str(out), "--slices", "1", "--samples", "2",
                 "--steps", "2", "--no-progress"]) == 0
    assert not (out / "calibration.csv").exists()
    assert "zero std everywhere" in (out / "report.html").read_text()


def test_demo_sampler_options_and_projection_make_the_output_consistent(tmp_path):
    ck = make_checkpoint(tmp_path / "ck")
    out = tmp_path / "demo"
    assert main(["demo", "--checkpoint", str(ck), "--out", str(out), "--slices", "1", "--samples", "1", "--steps", "2",
                 "--sampler", "ddim", "--eta", "0", "--consistency", "project", "--no-progress"]) == 0
    md = (out / "results.md").read_text()
    assert "ddim sampler (eta 0) on the uniform grid, 2 steps" in md and "data consistency project" in md
    bicubic_error, meddiff_error = (float(v) for v in re.search(r"bicubic ([0-9.]+e[+-]\d+), meddiff sample ([0-9.]+e[+-]\d+)", md).groups())
    assert meddiff_error < 1e-5 < bicubic_error


def test_demo_refuses_an_unknown_sampler(tmp_path, identity_ckpt, capsys):
    assert main(["demo", "--checkpoint", str(identity_ckpt), "--out", str(tmp_path / "d"), "--sampler", "euler", "--no-progress"]) != 0
    assert "--sampler euler: expected one of" in capsys.readouterr().err


def test_demo_volume_on_a_tiny_crop_with_the_identity_model(tmp_path, identity_ckpt):
    """`meddiff demo --volume` end to end on 12 slices x 32 x 32 of Colin27: the identity model returns the
    bicubic volume, so its row equals bicubic's (through-plane error ratio 1); the figure, the table and
    the restored NIfTI (the crop's shape, 3 x 1 x 1 mm) are written."""
    import nibabel as nib

    out = tmp_path / "dv"
    assert main(["demo", "--volume", "--checkpoint", str(identity_ckpt), "--out", str(out), "--slices", "12", "--crop", "32",
                 "--steps", "2", "--no-progress"]) == 0
    rows = read_rows(out / "results.csv")
    assert set(rows) == {"bicubic", "meddiff 2D"}
    for col, value in rows["bicubic"].items():
        if col != "method":
            assert float(rows["meddiff 2D"][col]) == pytest.approx(float(value), abs=1e-4), col
    assert float(rows["bicubic"]["through_plane_error_vs_bicubic"]) == 1.0
    assert 15 < float(rows["bicubic"]["psnr_slices"]) < 40
    assert (out / "volume.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = nib.load(str(out / "colin27_restored.nii.gz"))
    assert img.shape == (32, 32, 12) and np.allclose(img.header.get_zooms(), (1, 1, 3))
    assert "reformat 2 PSNR / SSIM" in (out / "results.md").read_text()


def test_demo_volume_default_is_the_2p5d_model_once_shipped(monkeypatch):
    from meddiff.commands import demo_volume

    class Card:
        def __init__(self, name):
            self.name = name

    monkeypatch.setattr("meddiff.commands.demo_volume.shipped_models", lambda: [Card("demo_sr_x4"), Card("sr_x4_general")])
    assert demo_volume.default_volume_checkpoint() == "sr_x4_general"
    monkeypatch.setattr("meddiff.commands.demo_volume.shipped_models", lambda: [Card("sr_x4_general"), Card("sr_x4_2p5d")])
    assert demo_volume.default_volume_checkpoint() == "sr_x4_2p5d"



def test_the_default_demo_model_is_the_recommended_super_resolution_model(monkeypatch):
    """No --checkpoint: the model models.yaml marks recommended for the demo's task (sr_x4_general today);
    --samples unset (the posterior mean draws one image); a registry with no such model is refused by name."""
    from meddiff.cli import build_parser
    from meddiff.evaluation import demo as ev
    from meddiff.checkpointing.named import resolve_checkpoint, shipped_models

    args = build_parser().parse_args(["demo"])
    assert args.checkpoint is None and args.samples is None
    cards = [c for c in shipped_models() if c.recommended and c.short_task == ev.DEMO_TASK]
    assert [c.name for c in cards] == ["sr_x4_general"]
    assert ev.default_checkpoint() == resolve_checkpoint("sr_x4_general") == cards[0].path

    class Card:
        def __init__(self, name, recommended, short_task=ev.DEMO_TASK):
            self.name, self.recommended, self.short_task, self.path = name, recommended, short_task, Path(name)

    monkeypatch.setattr("meddiff.evaluation.demo.shipped_models", lambda: [Card("demo_sr_x4", True), Card("sr_x4_general", False)])
    assert ev.default_checkpoint() == Path("demo_sr_x4")  # follows the flag, not a name
    monkeypatch.setattr("meddiff.evaluation.demo.shipped_models", lambda: [Card("sr_blind", True, "MR super-resolution x2-x4")])
    with pytest.raises(CheckpointError, match="models.yaml.*recommended.*super-resolution x4.*found 0"):
        ev.default_checkpoint()


def test_default_demo_shows_the_calibrated_interval_and_its_reliability_on_held_out_slices(tmp_path, capsys):
    """The default (sr_x4_general, one-call posterior mean) on one Colin27 slice: one meddiff row, no empty
    spread, the interval maps, the reliability diagram and the coverage with finite numbers, in the report
    and on the terminal, with the calibration's own sentence."""
    from meddiff.uncertainty.calibrate import read_calibrations

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--slices", "1", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert set(read_rows(out / "results.csv")) == {"bilinear", "bicubic", "meddiff (posterior mean)"}
    assert not (out / "std_maps.png").exists() and not (out / "calibration.csv").exists()
    for png in ("reliability.png", "interval_maps.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    deciles = list(csv.DictReader(open(out / "reliability.csv")))
    assert len(deciles) == 10
    assert all(np.isfinite(float(d[k])) and float(d[k]) > 0 for d in deciles for k in ("predicted_rms", "actual_rmse", "ratio"))
    row = re.search(r"\| calibrated 90% interval \(learned error scale\) \| (\d+) \| ([0-9.]+) \| ([0-9.-]+) \|",
                    (out / "reliability.md").read_text())
    assert row and int(row.group(1)) > 1000 and 0 < float(row.group(2)) <= 1, row
    html = (out / "report.html").read_text()
    cal = next(c for c in read_calibrations(resolve_checkpoint("sr_x4_general")) if c.sampler == "posterior_mean 1")
    assert cal.sentence(0.9) in html  # what the maps mean and how they were calibrated, from the model file
    coverage = float(row.group(2))
    assert f"held the true value in {coverage:.1%} of the pixels" in html
    assert ("within the 88-92% target" in html) == (0.88 <= coverage <= 0.92)
    assert "predicted error (calibrated)" in html and "Per decile of predicted error" in html
    assert "calibrated 90% interval" in printed and "| 10 |" in printed
