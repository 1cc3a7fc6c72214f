"""restore(): per-image seeds independent of batching, padding, repeated samples and summaries."""

import numpy as np
import pytest
import torch
from torch import nn

from meddiff import config as config_mod
from meddiff.diffusion.denoiser import DDPMDenoiser
from meddiff.diffusion.schedule import build_schedule
from meddiff.samplers.run import image_seed, pad_spatial, restore, summarise
from meddiff.nn.unet import build_unet
from meddiff.samplers.ancestral import sample_ancestral
from meddiff.samplers.noise import generators_for


def tiny_denoiser(cond_channels=1, prediction="eps", residual=False) -> DDPMDenoiser:
    cfg = config_mod.from_dict({
        "model": {"channels": [8, 16], "attention_levels": [False, True], "norm_groups": 4, "num_res_blocks": 1, "num_heads": 2},
        "diffusion": {"timesteps": 50, "prediction": prediction, "residual": residual},
        "sampler": {"steps": 5},
    })
    torch.manual_seed(0)
    net = build_unet(cfg.model, 1 + cond_channels, 1)
    with torch.no_grad():  # the output conv is zero-initialised: give it weights so the net matters
        for p in net.conv_out.parameters():
            p.normal_(0, 0.3)
    return DDPMDenoiser(net.eval(), build_schedule(cfg.diffusion), prediction, residual)


def conds(n=5, h=9, w=11, seed=0):
    return torch.rand(n, 1, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_slice_result_does_not_depend_on_batch_size_or_batch_mates():
    den = tiny_denoiser()
    c = conds()
    a = restore(den, c, steps=4, batch_size=1, progress=False)
    b = restore(den, c, steps=4, batch_size=3, progress=False)
    d = restore(den, c, steps=4, batch_size=5, progress=False)
    assert a.shape == (1, 5, 1, 9, 11) and a.dtype == torch.float32
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    torch.testing.assert_close(a, d, rtol=0, atol=1e-5)
    # slice 2 in a batch with other conditions (slices 0, 1, 3, 4 replaced) is unchanged
    other = conds(seed=9)
    other[2] = c[2]
    e = restore(den, other, steps=4, batch_size=5, progress=False)
    torch.testing.assert_close(e[:, 2], a[:, 2], rtol=0, atol=1e-5)
    assert not torch.allclose(e[:, 0], a[:, 0], atol=1e-3)


def test_documented_seed_of_each_slice_and_sample():
    den = tiny_denoiser()
    c = conds(n=2, h=8, w=8)
    out = restore(den, c, steps=3, samples=2, seed=40, batch_size=2, progress=False)
    s, n = 1, 1
    assert image_seed(40, n, s) == image_seed(40, n, s) != image_seed(41, n - 1, s)
    assert len({image_seed(sd, i, k) for sd in range(3) for i in range(3) for k in range(3)}) == 27
    direct = sample_ancestral(den, c[n : n + 1], steps=3, generators=generators_for([image_seed(40, n, s)]))
    torch.testing.assert_close(out[s, n], direct[0], rtol=0, atol=1e-5)


def test_different_seeds_and_samples_differ_same_seed_repeats():
    den = tiny_denoiser()
    c = conds(n=2)
    a = restore(den, c, steps=4, seed=0, progress=False)
    b = restore(den, c, steps=4, seed=0, progress=False)
    other = restore(den, c, steps=4, seed=7, progress=False)
    assert torch.equal(a, b)
    assert (a - other).abs().mean() > 1e-2
    many = restore(den, c, steps=4, samples=3, seed=0, progress=False)
    assert many.shape == (3, 2, 1, 9, 11)
    torch.testing.assert_close(many[0], a[0], rtol=0, atol=1e-6)  # sample 0 is the single-sample result
    mean, std = summarise(many)
    assert std.mean() > 0.05 and (std > 0).float().mean() > 0.5  # (pixels clipped to +-1 in all samples have 0)
    arr = many.double().numpy()
    np.testing.assert_allclose(mean.numpy(), arr.mean(0), rtol=0, atol=1e-6)
    np.testing.assert_allclose(std.numpy(), arr.std(0, ddof=1), rtol=0, atol=1e-6)


def test_summarise_of_one_sample_has_zero_std():
    x = torch.randn(1, 2, 1, 3, 3)
    mean, std = summarise(x)
    assert torch.equal(mean, x[0]) and torch.equal(std, torch.zeros_like(x[0]))


class Recorder(nn.Module):
    """Output zeros, remember inputs; needs sizes that are multiples of 4."""

    size_multiple = 4

    def __init__(self):
        super().__init__()
        self.inputs = []

    def forward(self, x, k):
        assert x.shape[-2] % 4 == 0 and x.shape[-1] % 4 == 0
        self.inputs.append(x.clone())
        return torch.zeros_like(x[:, :1])


def test_padding_to_the_network_multiple_is_background_and_cropped_back():
    net = Recorder()
    den = DDPMDenoiser(net, build_schedule(config_mod.from_dict({"diffusion": {"timesteps": 20}, "sampler": {"steps": 2}}).diffusion), "x0")
    cond = torch.full((2, 1, 5, 6), 0.5)
    mask = torch.zeros(2, 1, 5, 6)
    mask[:, :, 1:3, 1:3] = 1
    out = restore(den, torch.cat([cond, mask], 1), steps=2, progress=False)
    assert out.shape == (1, 2, 1, 5, 6)
    x = net.inputs[0]
    assert x.shape == (2, 3, 8, 8)
    assert torch.equal(x[:, 1:2, :5, :6], cond) and torch.equal(x[:, 2:3, :5, :6], mask)
    assert torch.all(x[:, 1, 5:, :] == -1) and torch.all(x[:, 1, :, 6:] == -1)  # image: background
    assert torch.all(x[:, 2, 5:, :] == 0) and torch.all(x[:, 2, :, 6:] == 0)  # mask: known pixels
    # an x0-predicting zero network returns exactly 0 everywhere (last step = x0 estimate)
    assert torch.equal(out, torch.zeros_like(out))


def test_pad_spatial():
    x = torch.ones(1, 1, 5, 8)
    p, (h, w) = pad_spatial(x, 4, value=-2.0)
    assert p.shape == (1, 1, 8, 8) and (h, w) == (5, 8)
    assert torch.equal(p[..., :5, :], x) and torch.all(p[..., 5:, :] == -2.0)
    same, _ = pad_spatial(x[..., :4, :], 4)
    assert same.shape == (1, 1, 4, 8)


def test_bad_inputs_raise():
    den = tiny_denoiser()
    c = conds(n=1, h=8, w=8)
    bad = c.clone()
    bad[0, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        restore(den, bad, steps=2, progress=False)
    with pytest.raises(ValueError, match=r"sampler euler: expected one of \['ancestral', 'ddim', 'dpm_solver_pp', 'posterior_mean', 'student'\]"):
        restore(den, c, sampler="euler", steps=2, progress=False)


def test_sampler_options_grid_auto_is_logsnr_for_dpm_solver_and_uniform_for_ddim():
    from meddiff.samplers.run import sampler_options

    assert sampler_options("dpm_solver_pp", "beta", 1.0) == {"grid": "logsnr"}
    assert sampler_options("ddim", "beta", 0.0) == {"eta": 0.0, "grid": "uniform"}
    assert sampler_options("dpm_solver_pp", "beta", 1.0, "uniform") == {"grid": "uniform"}
    assert sampler_options("ancestral", "beta_tilde", 1.0, "logsnr") == {"variance": "beta_tilde"}
    with pytest.raises(ValueError, match="grid cosine: expected one of"):
        sampler_options("ddim", "beta", 0.0, "cosine")


def test_sampler_grid_config_key_is_validated():
    from meddiff import config as config_mod
    from meddiff.errors import ConfigError

    assert config_mod.from_dict({"sampler": {"grid": "logsnr"}}).sampler.grid == "logsnr"
    with pytest.raises(ConfigError, match="grid"):
        config_mod.from_dict({"sampler": {"grid": "cosine"}})
