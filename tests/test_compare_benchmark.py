"""benchmarks/compare.py (issue 7): every method restores the same degraded Colin27 slices, then `meddiff evaluate`.

Tiny runs are trained on the spot (2 steps on the shipped MNI152 samples at 32 x 32, as
tests/baselines/test_baseline_cli.py does); they restore the 128 x 128 Colin27 slices (fully
convolutional networks).
"""

import csv
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from meddiff.baselines.classical import median_filter
from meddiff.baselines.interpolation import interpolate_baseline
from meddiff.cli import main as meddiff_main
from meddiff.data.degrade import SuperResolution
from meddiff.data.prepare import PrepareOptions, prepare
from meddiff.data.samples import samples_dir
from meddiff.samplers.run import restore, sampler_options
from meddiff.io import read_volume
from meddiff.diffusion.checkpoint import load_model

REPO = Path(__file__).resolve().parent.parent
FAST_EVAL = ["--evaluate-args", "--no-fid", "--lpips", "none", "--bootstrap", "100", "--report-images", "0"]


@pytest.fixture(scope="module")
def compare():
    spec = importlib.util.spec_from_file_location("compare_benchmark", REPO / "benchmarks" / "compare.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A tiny x4 DDPM (DPM-Solver++, 2 steps; eps-prediction, not residual, so its output depends on the
    seed, not only on the condition) and a tiny pix2pix x4 baseline, each trained 2 steps."""
    root = tmp_path_factory.mktemp("cmp")
    prepare(samples_dir("mni152"), root / "prep", PrepareOptions(size=32), progress=False)
    common = [f"data.prepared={root / 'prep'}", "data.size=32", "data.crop=0", "train.batch_size=2", "train.steps=2",
              "train.log_every=1", "train.ckpt_every=2", "train.threads=1"]
    ddpm, p2p = root / "ddpm", root / "p2p"
    assert meddiff_main(["train", "--no-progress", "--config", str(REPO / "configs/demo_sr_x4.yaml"), "--out", str(ddpm),
                         *common, "model.channels=[8,16]", "model.attention_levels=[false,true]", "model.norm_groups=4",
                         "model.num_heads=2", "diffusion.timesteps=100", "diffusion.residual=false",
                         "diffusion.prediction=eps", "sampler.steps=2"]) == 0
    assert meddiff_main(["train", "--no-progress", "--config", str(REPO / "configs/baselines/pix2pix_sr_x4.yaml"),
                         "--out", str(p2p), *common, "baseline.width=8", "baseline.disc_width=8", "baseline.depth=5",
                         "baseline.disc_layers=2"]) == 0
    return {"ddpm": ddpm, "p2p": p2p}


def stems(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.nii.gz"))


def read_stack(folder: Path, names: list[str]) -> np.ndarray:
    return np.stack([read_volume(folder / n).array for n in names])


def result_methods(path: Path) -> list[str]:
    with open(path, newline="") as fh:
        return [row["method"] for row in csv.DictReader(fh)]


def test_sr_folders_known_answers_table_and_errors(compare, runs, tmp_path, capsys):
    out = tmp_path / "sr"
    assert compare.main(["--task", "sr", "--method", f"ddpm={runs['ddpm']}", "--method", f"p2p={runs['p2p']}",
                         "--classical", "bicubic", "bilinear", "--factors", "4", "--slices", "4", "--out", str(out),
                         *FAST_EVAL]) == 0
    printed = capsys.readouterr().out
    g = out / "x4"
    names = stems(g / "truth")
    assert len(names) == 4 and all(n.startswith("colin27_") for n in names)
    for m in ("input", "lowres", "bicubic", "bilinear", "ddpm", "p2p"):
        assert stems(g / m) == names, m  # identical names (one sample: no _std/_sample files)
    truth = read_stack(g / "truth", names)
    assert truth.shape == (4, 128, 128) and truth.min() >= -1 and truth.max() <= 1 and truth.dtype == np.float32
    # the measurement is the anti-aliased x4 downsampling of the truth; bicubic is exactly its interpolation
    lowres = torch.from_numpy(read_stack(g / "lowres", names))[:, None]
    assert lowres.shape == (4, 1, 32, 32)
    x = torch.from_numpy(truth)[:, None]
    assert torch.allclose(lowres, SuperResolution(4.0).downsample(x), atol=1e-6)
    for m in ("bicubic", "bilinear"):
        want = interpolate_baseline(lowres, (128, 128), m)[:, 0].numpy()
        assert np.array_equal(read_stack(g / m, names), want), m
    near = interpolate_baseline(lowres, (128, 128), "nearest")[:, 0].numpy()
    assert np.array_equal(read_stack(g / "input", names), near)
    # the DDPM folder is meddiff.samplers.run.restore of the run's x4 condition with seed 0 and the run's sampler
    cfg, _, den = load_model(runs["ddpm"])
    cond = SuperResolution(4.0)(x)[0]
    opts = sampler_options(cfg.sampler.name, cfg.diffusion.variance, cfg.sampler.eta, cfg.sampler.grid)
    want = restore(den, cond, sampler=cfg.sampler.name, steps=cfg.sampler.steps, seed=0, progress=False, **opts)[0]
    got = read_stack(g / "ddpm", names)
    assert np.abs(got - want[:, 0].clamp(-1, 1).numpy()).max() < 1e-6
    assert not np.allclose(got, read_stack(g / "bicubic", names), atol=1e-3)  # the network's sample, not the condition
    # evaluate's table: one row per method, tables and report where printed
    table = out / "report" / "results_x4.csv"
    assert result_methods(table) == ["ddpm", "p2p", "bicubic", "bilinear", "input"]
    assert (out / "report" / "report.html").is_file()
    assert str(out / "report" / "results_x4.md") in printed
    assert "ddpm (ddpm, " in printed and ": 2 steps, " in printed and " s training (" in printed
    with open(out / "timing.csv", newline="") as fh:
        timed = list(csv.DictReader(fh))
    assert [(r["group"], r["method"]) for r in timed] == [("x4", m) for m in ("ddpm", "p2p", "bicubic", "bilinear")]
    assert all(float(r["seconds_per_slice"]) > 0 for r in timed)

    # a run of another task kind, a missing run folder, an unknown task: clear errors, nothing written
    bad = tmp_path / "bad"
    assert compare.main(["--task", "denoise", "--method", f"p2p={runs['p2p']}", "--out", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"--method p2p={runs['p2p']}" in err and "task 'sr'" in err and "--task is 'denoise'" in err
    assert compare.main(["--task", "sr", "--method", f"x={tmp_path / 'nope'}", "--out", str(bad)]) == 2
    assert f"{tmp_path / 'nope'} does not exist" in capsys.readouterr().err
    assert compare.main(["--task", "deblur", "--out", str(bad)]) == 2
    assert "--task 'deblur': expected one of sr, denoise, inpaint" in capsys.readouterr().err
    assert not bad.exists()


def test_denoise_inputs_are_seeded_and_median_is_the_filter_of_the_input(compare, tmp_path, capsys):
    args = ["--task", "denoise", "--classical", "median", "--slices", "4"]
    assert compare.main([*args, "--out", str(tmp_path / "a"), *FAST_EVAL]) == 0
    assert compare.main([*args, "--out", str(tmp_path / "b"), *FAST_EVAL]) == 0
    assert compare.main([*args, "--seed", "1", "--out", str(tmp_path / "c"), *FAST_EVAL]) == 0
    capsys.readouterr()
    ga, gb, gc = (tmp_path / k / "denoise" for k in "abc")
    names = stems(ga / "truth")
    assert len(names) == 4 and stems(ga / "input") == names == stems(ga / "median")
    truth, noisy = read_stack(ga / "truth", names), read_stack(ga / "input", names)
    assert np.array_equal(noisy, read_stack(gb / "input", names))  # same seed, same degraded inputs
    assert not np.array_equal(noisy, read_stack(gc / "input", names))  # another seed, other noise
    assert np.array_equal(truth, read_stack(gc / "truth", names))
    # configs/demo_denoise.yaml: sigma ~ U(0.05, 0.2) per slice; on the brain (not clamped at -1) the median
    # |noise| of N(0, sigma) is 0.674 sigma, in [0.034, 0.135] (salt-and-pepper hits <= 5% of the pixels)
    fg = truth > -0.8
    for t, n, f in zip(truth, noisy, fg):
        assert 0.025 < float(np.median(np.abs(n - t)[f])) < 0.17
    want = np.stack([np.clip(median_filter(n.astype(np.float64)), -1, 1).astype(np.float32) for n in noisy])
    assert np.array_equal(read_stack(ga / "median", names), want)
    assert result_methods(tmp_path / "a" / "report" / "results_denoise.csv") == ["median", "input"]
