"""`meddiff train` + `meddiff sample` for a learned baseline, and `meddiff sample --method`, on real data."""

from pathlib import Path

import numpy as np
import pytest
import torch

from meddiff.baselines import load_baseline
from meddiff.baselines.registry import restore_baseline
from meddiff.cli import main
from meddiff.data.prepare import PrepareOptions, prepare
from meddiff.data.samples import samples_dir
from meddiff.io import Volume, read_volume, write_volume


def lowres_volume(path: Path) -> Volume:
    """3 axial MNI152 slices, 64x64 crop, 4x4 block means -> 16x16, written as NIfTI."""
    vol = read_volume(samples_dir("mni152") / "icbm152_2009a" / "axial.nii.gz")
    crop = vol.array[30:33, 60:124, 40:104].astype(np.float64)
    low = crop.reshape(3, 16, 4, 16, 4).mean(axis=(2, 4)).astype(np.float32)
    v = Volume(low, (vol.spacing[0], 4 * vol.spacing[1], 4 * vol.spacing[2]), np.diag([2.0, 4.0, 4.0, 1.0]), "mni", path,
               {"modality": "MR"})
    write_volume(v, path, overwrite=True)
    return read_volume(path)


def bicubic_planes(inp: Volume) -> torch.Tensor:
    """What `meddiff sample` gives the model: per-volume min/max to [-1, 1], bicubic x4, clamped."""
    lo, hi = float(inp.array.min()), float(inp.array.max())
    y = torch.from_numpy((inp.array.astype(np.float64) - lo) / (hi - lo) * 2 - 1).float()[:, None]
    return torch.nn.functional.interpolate(y, size=(64, 64), mode="bicubic").clamp(-1, 1)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bl")
    prepare(samples_dir("mni152"), root / "prep", PrepareOptions(size=32), progress=False)
    return root / "prep"


def test_train_then_sample_a_pix2pix_sr_model_end_to_end(prepared, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--no-progress", "--config", "configs/baselines/pix2pix_sr_x4.yaml", "--out", str(run),
            f"data.prepared={prepared}", "data.size=32", "data.crop=0", "baseline.width=8", "baseline.disc_width=8",
            "baseline.depth=5", "baseline.disc_layers=2", "train.batch_size=2", "train.log_every=1", "train.ckpt_every=2"]
    assert main([*args, "train.steps=2"]) == 0
    assert main([*args, "train.steps=3", "--resume"]) == 0
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_0000003"
    assert "checkpoint:" in capsys.readouterr().out
    inp = lowres_volume(tmp_path / "low.nii.gz")
    out_dir = tmp_path / "out"
    assert main(["sample", "--checkpoint", str(run), "--input", str(inp.source), "--output", str(out_dir),
                 "--samples", "2", "--seed", "3", "--no-progress"]) == 0
    sub = out_dir  # one input file: its outputs directly in the output folder (no patient folder)
    files = sorted(p.name for p in sub.glob("[!.]*") if p.suffix != ".json")  # the provenance sidecars aside
    assert files == ["low_mean.nii.gz", "low_sample0.nii.gz", "low_sample1.nii.gz", "low_std.nii.gz"]
    got = read_volume(sub / "low_sample1.nii.gz")
    assert got.shape == (3, 64, 64) and np.allclose(got.spacing, (2.0, 1.0, 1.0))
    # the known answer: the EMA model's prediction (sample 1, seed 3) of the bicubic condition, in input units
    _, model = load_baseline(run)
    pred = restore_baseline(model, bicubic_planes(inp), samples=2, seed=3)[1, :, 0].double().numpy()
    lo, hi = float(inp.array.min()), float(inp.array.max())
    assert np.abs(got.array - ((pred + 1) / 2 * (hi - lo) + lo)).max() < 1e-3 * (hi - lo)
    # sampler flags belong to diffusion checkpoints
    assert main(["sample", "--checkpoint", str(run), "--input", str(inp.source), "--output", str(out_dir),
                 "--steps", "5"]) == 2
    assert "--steps applies to DDPM checkpoints only, not to learned baselines" in capsys.readouterr().err


def test_sample_method_bicubic_is_the_interpolated_input_and_nlm_runs(tmp_path, capsys):
    inp = lowres_volume(tmp_path / "low.nii.gz")
    assert main(["sample", "--method", "bicubic", "--input", str(inp.source), "--output", str(tmp_path / "o")]) == 0
    got = read_volume(next((tmp_path / "o").glob("low_restored.nii.gz")))
    lo, hi = float(inp.array.min()), float(inp.array.max())
    want = (bicubic_planes(inp)[:, 0].double().numpy() + 1) / 2 * (hi - lo) + lo
    assert np.abs(got.array - want).max() < 1e-3 * (hi - lo)
    assert main(["sample", "--method", "nlm", "--input", str(inp.source), "--output", str(tmp_path / "n")]) == 0
    assert read_volume(next((tmp_path / "n").glob("low_restored.nii.gz"))).shape == inp.shape  # denoising keeps the grid
    assert main(["sample", "--method", "biharmonic", "--input", str(inp.source), "--output", str(tmp_path / "b")]) == 2
    assert "--method biharmonic inpaints: give --mask FILE" in capsys.readouterr().err
    assert main(["sample", "--input", str(inp.source), "--output", str(tmp_path / "x")]) == 2
    assert "give --checkpoint (a trained model) or --method" in capsys.readouterr().err
