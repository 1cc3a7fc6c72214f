"""pix2pixGAN and SRGAN: they learn (overfit one real pair), save/load exactly, resume bitwise,
and the registry/config refuse what they cannot build."""

import re

import pytest
import torch
from safetensors.torch import load_file

from meddiff import config as config_mod
from meddiff.baselines import build_baseline, load_baseline
from meddiff.baselines.pix2pix import PatchGAN, patch_receptive_field
from meddiff.baselines.registry import restore_baseline
from meddiff.data.degrade import SuperResolution
from meddiff.errors import CheckpointError, ConfigError, TrainingError
from meddiff.checkpointing import latest_checkpoint

from .conftest import NoisyCrops, psnr, tiny_baseline_config, train

OVERFIT = {  # name -> (baseline section, steps, lr, betas)
    "pix2pix": ({"name": "pix2pix", "width": 16, "disc_width": 16, "depth": 5, "disc_layers": 2}, 300, 2e-4, (0.5, 0.999)),
    "srgan": ({"name": "srgan", "width": 16, "n_blocks": 4, "disc_width": 8}, 400, 1e-3, (0.9, 0.999)),
}


@pytest.mark.parametrize("name", ["pix2pix", "srgan"])
def test_overfits_one_real_sr_pair(name, crop32):
    """SR x4 of a real 32x32 brain crop: the training loss falls and the prediction ends clearly
    closer to the target than its bicubic input (which is 27 dB)."""
    section, steps, lr, betas = OVERFIT[name]
    cfg = config_mod.from_dict({"objective": "baseline", "baseline": section})
    cond, mask = SuperResolution(4.0)(crop32)
    torch.manual_seed(0)
    model = build_baseline(cfg, 1)
    opts = model.optimisers(lr, betas, 0.0)
    key = "l1" if name == "pix2pix" else "content"
    curve = [model.train_step(crop32, cond, mask, opts, s)[key] for s in range(steps)]
    # the SRGAN content loss is bumpy once its adversarial term starts: judge the fall by the best of the last 50 steps
    first, last = sum(curve[:10]) / 10, min(curve[-50:])
    out = model.predict(cond, mask, torch.Generator().manual_seed(0))
    gain = psnr(out, crop32) - psnr(cond, crop32)
    assert last < 0.3 * first, (first, last)
    assert gain > 3.0, gain


def test_srgan_adversarial_term_starts_after_pretraining_and_has_the_paper_weight(crop32):
    cfg = config_mod.from_dict({"objective": "baseline", "baseline": {"name": "srgan", "width": 8, "n_blocks": 1,
                                                                      "disc_width": 4, "pretrain_steps": 2}})
    model = build_baseline(cfg, 1)
    assert model.adv_weight == 1e-3  # None = the paper's
    cond, mask = SuperResolution(4.0)(crop32)
    opts = model.optimisers(1e-4, (0.9, 0.999), 0.0)
    d0 = [p.clone() for p in model.disc.parameters()]
    logs = [model.train_step(crop32, cond, mask, opts, s) for s in range(3)]
    assert "d" not in logs[0] and "d" not in logs[1] and "d" in logs[2]
    assert logs[2]["loss"] == pytest.approx(logs[2]["content"] + 1e-3 * logs[2]["g_adv"], rel=1e-6)
    assert any(not torch.equal(a, b) for a, b in zip(d0, model.disc.parameters()))  # D trained only at step 2


def test_patchgan_is_70x70_and_sees_the_condition():
    """Output (0, 0) sees input pixels -23..46 (70 wide; 23 = the padding of 1 at strides 1, 2, 4, 8, 8):
    checked with the instance norms removed (their statistics span the whole image by design)."""
    assert patch_receptive_field(3) == 70 and patch_receptive_field(1) == 16
    torch.manual_seed(0)
    d = PatchGAN(2, 8, 3)
    for i, m in enumerate(d.net):
        if isinstance(m, torch.nn.InstanceNorm2d):
            d.net[i] = torch.nn.Identity()
    y, x = torch.randn(1, 1, 96, 96), torch.randn(1, 1, 96, 96)
    out = d(y, x)[..., 0, 0]
    far, near, cond = x.clone(), x.clone(), y.clone()
    far[..., 47:, :] += 5
    far[..., :, 47:] += 5
    near[..., 46, 46] += 5
    cond[..., 46, 46] += 5  # the condition is an input of D too
    assert torch.equal(d(y, far)[..., 0, 0], out)
    assert not torch.equal(d(y, near)[..., 0, 0], out)
    assert not torch.equal(d(cond, x)[..., 0, 0], out)


@pytest.mark.parametrize("name", ["pix2pix", "srgan"])
def test_checkpoint_round_trip_gives_identical_predictions(name, tmp_path):
    out = train(tiny_baseline_config(tmp_path, name, steps=3), NoisyCrops(), progress=False)
    cfg, model = load_baseline(out.checkpoint)
    assert cfg.baseline.name == name and not model.training
    ema = load_file(str(out.checkpoint / "model.safetensors"))
    assert any(k.startswith("disc.") for k in ema) and any(k.startswith("gen.") for k in ema)  # the whole module
    planes = NoisyCrops().x0[:4]
    a = restore_baseline(model, planes, samples=2, seed=5)
    b = restore_baseline(load_baseline(tmp_path)[1], planes, samples=2, seed=5)  # run folder -> latest
    assert torch.equal(a, b)
    if name == "pix2pix":  # dropout is noise at test time: samples differ, each is reproducible
        assert not torch.equal(a[0], a[1])
    else:
        assert torch.equal(a[0], a[1])
    # the DDPM loader refuses it by name
    from meddiff.diffusion.checkpoint import load_model
    with pytest.raises(CheckpointError, match="is a learned baseline checkpoint .* but a DDPM"):
        load_model(out.checkpoint)


def test_pix2pix_resume_ends_bitwise_equal_to_straight_run(tmp_path):
    """Exact resume (as the DDPM's and VDM's tests in tests/train/test_loop.py): both optimisers,
    raw and EMA weights, with dropout and noisy conditions drawn from the trainer's seeds."""
    straight = train(tiny_baseline_config(tmp_path / "a"), NoisyCrops(), progress=False)
    train(tiny_baseline_config(tmp_path / "b", steps=3), NoisyCrops(), progress=False)
    resumed = train(tiny_baseline_config(tmp_path / "b"), NoisyCrops(), resume=True, progress=False)
    assert straight.checkpoint.name == resumed.checkpoint.name == "step_0000006"
    for f in ("model.safetensors", "train_state.safetensors"):
        a, b = load_file(str(straight.checkpoint / f)), load_file(str(resumed.checkpoint / f))
        assert a.keys() == b.keys()
        for k in a:
            if k != "rng.torch_cpu":
                assert torch.equal(a[k], b[k]), k
    state = load_file(str(straight.checkpoint / "train_state.safetensors"))
    assert {k.split(".")[1] for k in state if k.startswith("optim.")} == {"G", "D"}  # both optimisers by name
    assert not torch.equal(state["model.gen.down.0.0.weight"], load_file(str(straight.checkpoint / "model.safetensors"))["gen.down.0.0.weight"])


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from meddiff.baselines.pix2pix import Pix2Pix

    real = Pix2Pix.train_step

    def nan_at_step_5(self, x0, cond, mask, opts, step):
        out = real(self, x0, cond, mask, opts, step)
        return {**out, "loss": float("nan")} if step == 4 else out

    monkeypatch.setattr(Pix2Pix, "train_step", nan_at_step_5)
    with pytest.raises(TrainingError, match=r"loss is nan at step 5; training stopped \(last good checkpoint: .*step_0000003\)"):
        train(tiny_baseline_config(tmp_path), NoisyCrops(), progress=False)
    assert latest_checkpoint(tmp_path / "checkpoints").name == "step_0000003"


@pytest.mark.parametrize("values, message", [
    ({"baseline": {"name": "cyclegan"}}, "baseline.name: 'cyclegan' is not one of"),
    ({"baseline": {"widht": 8}}, "baseline: unknown key(s) ['widht']"),
    ({"baseline": {"width": 0}}, "baseline.width: expected an integer >= 1, got 0"),
    ({"baseline": {"dropout": 1.0}}, "baseline.dropout: expected a number in [0, 1), got 1.0"),
    ({"baseline": {"adv_weight": -1}}, "baseline.adv_weight: expected a finite number >= 0, got -1.0"),
    ({"objective": "baseline", "train": {"precision": "bf16"}}, "train.precision: baselines train in fp32"),
])
def test_baseline_section_is_strictly_validated(values, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_mod.from_dict(values)


def test_registry_names_a_missing_module(monkeypatch):
    from meddiff.baselines import registry

    monkeypatch.setitem(registry.BASELINES, "hpunet", "no_such_module:HPUNet")
    cfg = config_mod.from_dict({"objective": "baseline", "baseline": {"name": "hpunet"}})
    with pytest.raises(ConfigError, match=r"baseline 'hpunet' needs the module meddiff.baselines.no_such_module \(HPUNet\)"):
        build_baseline(cfg, 1)
