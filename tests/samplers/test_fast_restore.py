"""DDIM and DPM-Solver++ through inference.restore and `meddiff sample`: registration, options
passed through, per-image seeds independent of the batch, and the CLI's --sampler / --eta."""

import numpy as np
import pytest
import torch

from meddiff import config as config_mod
from meddiff.cli import main
from meddiff.diffusion.denoiser import DDPMDenoiser
from meddiff.diffusion.schedule import build_schedule
from meddiff.samplers.run import restore
from meddiff.samplers.registry import SAMPLERS
from meddiff.io import read_volume
from meddiff.nn.unet import build_unet
from meddiff.samplers.ddim import sample_ddim
from meddiff.samplers.dpm_solver import sample_dpm_solver_pp
from meddiff.checkpointing import save_checkpoint


def tiny_config(**diffusion):
    return config_mod.from_dict({
        "task": {"kind": "sr", "sr_factor": 4.0},
        "model": {"channels": [8, 16], "attention_levels": [False, True], "norm_groups": 4, "num_res_blocks": 1, "num_heads": 2},
        "diffusion": {"timesteps": 50, **diffusion},
        "sampler": {"steps": 4},
    })


def tiny_net(cfg):
    torch.manual_seed(0)
    net = build_unet(cfg.model, 2, 1)
    with torch.no_grad():  # the output conv is zero-initialised: give it weights so the net matters
        for p in net.conv_out.parameters():
            p.normal_(0, 0.3)
    return net.eval()


@pytest.fixture(scope="module")
def den():
    cfg = tiny_config(prediction="v")
    return DDPMDenoiser(tiny_net(cfg), build_schedule(cfg.diffusion), "v")


def conds(n=5, seed=0):
    return torch.rand(n, 1, 9, 11, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_registered_under_their_names():
    assert SAMPLERS["ddim"].function is sample_ddim and SAMPLERS["dpm_solver_pp"].function is sample_dpm_solver_pp


@pytest.mark.parametrize("sampler,options", [("ddim", {"eta": 0.5}), ("dpm_solver_pp", {"order": 2}),
                                             ("dpm_solver_pp", {"order": 3, "grid": "logsnr"})])
def test_slice_result_does_not_depend_on_batch_size(den, sampler, options):
    c = conds(4)
    a = restore(den, c, sampler=sampler, steps=4, batch_size=1, samples=2, progress=False, **options)
    b = restore(den, c, sampler=sampler, steps=4, batch_size=3, samples=2, progress=False, **options)
    assert a.shape == (2, 4, 1, 9, 11)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert not torch.allclose(a[0], a[1], atol=1e-3)  # samples s = 0, 1 start from different x_T


def test_options_reach_the_sampler(den):
    c = conds(2)
    eta0 = restore(den, c, sampler="ddim", steps=6, eta=0.0, progress=False)
    order1 = restore(den, c, sampler="dpm_solver_pp", steps=6, order=1, progress=False)
    torch.testing.assert_close(eta0, order1, rtol=0, atol=1e-5)  # DPM-Solver++(1) is DDIM
    assert not torch.allclose(eta0, restore(den, c, sampler="ddim", steps=6, eta=1.0, progress=False), atol=1e-3)
    assert not torch.allclose(eta0, restore(den, c, sampler="dpm_solver_pp", steps=6, progress=False), atol=1e-3)
    with pytest.raises(TypeError, match="variance"):
        restore(den, c, sampler="ddim", steps=6, variance="beta", progress=False)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    cfg = tiny_config()
    net = tiny_net(cfg)
    return save_checkpoint(tmp_path_factory.mktemp("ck"), 1, cfg, net, net, torch.optim.Adam(net.parameters()), in_channels=2)


def cli(ckpt, inp, out, *extra):
    return main(["sample", "--checkpoint", str(ckpt), "--input", str(inp), "--output", str(out), "--steps", "3",
                 "--no-progress", "--device", "cpu", *map(str, extra)])


def restored(out):
    (path,) = sorted(p for p in out.rglob("*_restored*") if p.suffix != ".json")
    return read_volume(path).array


def test_cli_sampler_and_eta(tmp_path, ckpt, capsys):
    inp = tmp_path / "low.npy"
    np.save(inp, np.random.default_rng(0).random((2, 8, 8)).astype(np.float32) * 100)
    assert cli(ckpt, inp, tmp_path / "d0", "--sampler", "ddim", "--eta", "0") == 0
    assert cli(ckpt, inp, tmp_path / "d0b", "--sampler", "ddim", "--eta", "0") == 0
    assert cli(ckpt, inp, tmp_path / "d1", "--sampler", "ddim", "--eta", "1") == 0
    assert cli(ckpt, inp, tmp_path / "dp", "--sampler", "dpm_solver_pp") == 0
    d0, d0b, d1, dp = (restored(tmp_path / n) for n in ("d0", "d0b", "d1", "dp"))
    assert d0.shape == (2, 32, 32) and np.isfinite(d0).all()
    np.testing.assert_array_equal(d0, d0b)
    assert np.abs(d0 - d1).mean() > 1e-3 * np.ptp(d0) and np.abs(d0 - dp).mean() > 1e-3 * np.ptp(d0)
    assert cli(ckpt, inp, tmp_path / "x", "--sampler", "ddim", "--eta", "1.5") == 2
    assert "--eta 1.5: expected a number in [0, 1]" in capsys.readouterr().err
    assert cli(ckpt, inp, tmp_path / "x", "--sampler", "ancestral", "--eta", "0") == 2
    assert "--eta applies to --sampler ddim only, not ancestral" in capsys.readouterr().err
