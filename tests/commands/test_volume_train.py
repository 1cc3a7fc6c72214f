"""`meddiff train` on volumes: 2 steps of a tiny 2.5D and a tiny 3D config on the shipped MNI152 stacks,
then `meddiff sample` with the 2.5D checkpoint (and a clear refusal for the 3D one)."""

import numpy as np
import pytest
import torch

from meddiff import config as config_mod
from meddiff.cli import main
from meddiff.data.samples import samples_dir
from meddiff.errors import ConfigError
from meddiff.nn.unet import build_unet
from meddiff.samplers.dpm_solver import sample_dpm_solver_pp
from meddiff.diffusion.checkpoint import load_model

TINY = ["model.channels=[8,16]", "model.attention_levels=[false,true]", "model.norm_groups=4",
        "train.steps=2", "train.batch_size=2", "train.ckpt_every=2", "train.log_every=1"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("vt") / "prep"
    assert main(["prepare", str(samples_dir("mni152")), str(out), "--mode", "volume", "--spacing", "4", "--split", "1", "0", "0"]) == 0
    return out


def test_unet_builds_and_runs_in_3d():
    cfg = config_mod.from_dict({"data": {"mode": "volume", "patch": [8, 8, 8]},
                                "model": {"spatial_dims": 3, "channels": [8, 16], "attention_levels": [False, True], "norm_groups": 4}})
    net = build_unet(cfg.model, 2, 1)
    net.conv_out.weight.data.normal_(0, 0.1)
    out = net(torch.randn(2, 2, 8, 8, 8), torch.tensor([3, 7]))
    assert out.shape == (2, 1, 8, 8, 8) and out.abs().sum() > 0


def test_config_rules_for_volumes():
    with pytest.raises(ConfigError, match="data.mode volume"):
        config_mod.from_dict({"task": {"context_slices": 2}})
    with pytest.raises(ConfigError, match="data.patch"):
        config_mod.from_dict({"data": {"mode": "volume"}, "model": {"spatial_dims": 3}})
    with pytest.raises(ConfigError, match="integer task.sr_factor"):
        config_mod.from_dict({"task": {"sr_axis": "through", "sr_factor": 2.5}})


def test_train_2p5d_two_steps_then_sample_a_volume(prepared, tmp_path):
    run = tmp_path / "r25"
    # eps-prediction of x0: the barely trained network's output depends on the noise (residual x0 would return bicubic)
    assert main(["train", "--config", "configs/volume_2p5d_sr_x4.yaml", f"data.prepared={prepared}", "data.crop=16",
                 "diffusion.prediction=eps", "diffusion.residual=false", *TINY, f"train.out_dir={run}", "--no-progress"]) == 0
    cfg, net, _ = load_model(run)
    assert cfg.task.context_slices == 2 and net.in_channels == 1 + 5
    one = np.load(next((prepared / "volumes").glob("*axial.npy")))[8, :8, :12]
    np.save(tmp_path / "low.npy", np.ascontiguousarray(np.repeat(one[None], 4, axis=0)))  # 4 identical slices
    outs = {}
    for noise in ("shared", "independent"):
        assert main(["sample", "--checkpoint", str(run), "--input", str(tmp_path / "low.npy"), "--output", str(tmp_path / noise),
                     "--steps", "2", "--noise", noise, "--no-progress"]) == 0
        outs[noise] = np.load(tmp_path / noise / "low_restored.npy")
        assert outs[noise].shape == (4, 32, 48) and np.isfinite(outs[noise]).all()
    assert np.array_equal(outs["shared"][0], outs["shared"][3])  # same condition, same noise: same result
    assert not np.allclose(outs["independent"][0], outs["independent"][3])
    assert np.array_equal(outs["shared"][0], outs["independent"][0])  # slice 0 keeps its seed in both modes


def test_noise_applies_to_ddpm_checkpoints_only(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).uniform(0, 1, (2, 8, 8)).astype(np.float32))
    assert main(["sample", "--method", "bicubic", "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "o"),
                 "--noise", "shared"]) != 0
    assert "--noise applies to DDPM checkpoints only" in capsys.readouterr().err
    assert main(["prepare", str(tmp_path), str(tmp_path / "p"), "--spacing", "2"]) != 0
    assert "--spacing applies to --mode volume only" in capsys.readouterr().err


@pytest.fixture(scope="module")
def run_3d(prepared, tmp_path_factory):
    """A tiny 3D thick-slice x4 model (configs/volume_3d_thick_x4.yaml) trained 2 steps; eps-prediction of x0,
    so that its samples depend on the noise (residual x0 would return the cubic interpolation)."""
    run = tmp_path_factory.mktemp("r3d") / "run"
    assert main(["train", "--config", "configs/volume_3d_thick_x4.yaml", f"data.prepared={prepared}", "data.patch=[8,16,16]",
                 "diffusion.prediction=eps", "diffusion.residual=false",
                 *TINY, f"train.out_dir={run}", "--no-progress"]) == 0
    return run


def test_train_3d_two_steps_and_sample_a_patch(run_3d):
    cfg, net, den = load_model(run_3d)
    assert cfg.model.spatial_dims == 3 and net.spatial_dims == 3
    cond = torch.rand(1, 1, 8, 16, 16) * 2 - 1
    x = sample_dpm_solver_pp(den, cond, steps=2, generators=[torch.Generator().manual_seed(0)])
    assert x.shape == (1, 1, 8, 16, 16) and torch.isfinite(x).all()
