"""A class-conditional VDM with the U-Net score network (the chest-film model of configs/vdm_cxr64_cls.yaml):
the class embedding enters the U-Net's time embedding through a projection that starts at zero, so a
model initialised from an unconditional checkpoint starts as exactly that model, and training makes the
class matter."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from meddiff import config as config_mod
from meddiff.checkpointing.folders import init_weights
from meddiff.checkpointing.formats import VDM
from meddiff.errors import CheckpointError, ConfigError
from meddiff.nn.unet import UNet
from meddiff.vdm.checkpoint import load_vdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from train.conftest import TinyPairs, tiny_config, train  # noqa: E402

LABELS = {f"case{i}": i for i in range(3)}  # TinyPairs' case ids case0..case2


def unet_vdm(out_dir, classes: int, **train_values):
    vdm = {"score": "unet", "gamma": "learned_linear", "embedding_dim": 16}
    if classes:
        vdm.update(n_classes=classes, label_from="column:c")
    base = config_mod.to_dict(tiny_config(out_dir, steps=2))
    return config_mod.from_dict({**base, "objective": "vdm", "vdm": vdm, "train": {**base["train"], **train_values}})


def test_unet_refuses_a_missing_or_unexpected_conditioning_vector():
    plain, cond = UNet(1, 1, (8, 16), 1, (False, True), 4, 2), UNet(1, 1, (8, 16), 1, (False, True), 4, 2, cond_dim=5)
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([10.0, 500.0])
    with pytest.raises(ValueError, match="cond_dim 0 called with a conditioning vector"):
        plain(x, t, torch.zeros(2, 5))
    with pytest.raises(ValueError, match="cond_dim 5 called with no conditioning vector"):
        cond(x, t)


def test_class_conditional_unet_vdm_starts_as_its_unconditional_parent_and_learns_the_class(tmp_path):
    parent = train(unet_vdm(tmp_path / "u", 0), TinyPairs(), progress=False).checkpoint
    uncond = load_vdm(parent).model
    child_cfg = unet_vdm(tmp_path / "c", 3, init_from=str(parent), steps=4, lr=3e-2, warmup_steps=0, ema_decay=0.0)
    from meddiff.vdm.build import build_vdm

    child = build_vdm(child_cfg, (1, 8, 8)).eval()
    init_weights(child, parent, VDM.name)
    z, g = torch.randn(3, 1, 8, 8), torch.tensor([-5.0, 0.0, 3.0])
    labels = torch.tensor([0, 1, 2])
    with torch.no_grad():
        want = uncond.score(z, g)
        got = child.score(z, g, child.embed(labels))
    assert torch.equal(got, want)  # the projection is zero: step 0 is the parent, bit for bit

    out = train(child_cfg, TinyPairs(), labels=LABELS, class_names=["a", "b", "c"], progress=False)
    tuned = load_vdm(out.checkpoint)
    assert tuned.class_names == ("a", "b", "c") and tuned.model.score.unet.cond_dim == 16  # embedding_dim of tiny_config
    with torch.no_grad():
        per_class = [tuned.model.score(z[:1], g[:1], tuned.model.embed(torch.tensor([k]))) for k in range(3)]
    assert (per_class[0] - per_class[1]).abs().max() > 1e-4  # training made the label matter


def test_only_the_conditioning_tensors_may_be_missing_from_an_init_file(tmp_path):
    parent = train(unet_vdm(tmp_path / "u", 0), TinyPairs(), progress=False).checkpoint
    wider = unet_vdm(tmp_path / "w", 3)
    wider = config_mod.from_dict({**config_mod.to_dict(wider), "model": {**config_mod.to_dict(wider)["model"],
                                                                          "channels": [8, 32]}})
    from meddiff.vdm.build import build_vdm

    with pytest.raises(CheckpointError, match="has shape"):
        init_weights(build_vdm(wider, (1, 8, 8)), parent, VDM.name)


@pytest.mark.parametrize("scale", [1.0, 10.0])
def test_class_lr_scale_steps_the_class_path_at_that_multiple_of_the_schedule(tmp_path, scale):
    """Adam's first step moves every parameter with a gradient by exactly its lr (m / sqrt(v) = sign(g)):
    the class path (class embedding, U-Net conditioning projection) by lr x vdm.class_lr_scale, the rest by lr."""
    parent = train(unet_vdm(tmp_path / "u", 0), TinyPairs(), progress=False).checkpoint
    lr = 1e-3
    cfg = unet_vdm(tmp_path / "c", 3, init_from=str(parent), steps=1, lr=lr, warmup_steps=0, ema_decay=0.0,
                   weight_decay=0.0, lr_schedule="constant")
    cfg = config_mod.from_dict({**config_mod.to_dict(cfg), "vdm": {**config_mod.to_dict(cfg)["vdm"], "class_lr_scale": scale}})
    from meddiff.vdm.build import build_vdm

    start = build_vdm(cfg, (1, 8, 8))
    init_weights(start, parent, VDM.name)
    before = {k: v.clone() for k, v in start.state_dict().items()}
    after = load_vdm(train(cfg, TinyPairs(), labels=LABELS, class_names=["a", "b", "c"], progress=False).checkpoint).model
    moved = {k: float((v.float() - before[k].float()).abs().max()) for k, v in after.state_dict().items()}
    assert moved["score.unet.cond_proj.weight"] == pytest.approx(lr * scale, rel=1e-2)
    assert moved["score.unet.conv_in.weight"] == pytest.approx(lr, rel=1e-2)


@pytest.mark.parametrize("vdm, message", [
    ({"class_lr_scale": 0.0}, "vdm.class_lr_scale: expected a number > 0, got 0.0"),
    ({"class_lr_scale": float("inf")}, "vdm.class_lr_scale: expected a number > 0, got inf"),
    ({"class_lr_scale": 5.0}, "vdm.class_lr_scale is 5.0 but vdm.n_classes is 0"),
])
def test_bad_class_lr_scale_is_a_config_error_naming_the_key(vdm, message):
    with pytest.raises(ConfigError) as e:
        config_mod.from_dict({"objective": "vdm", "vdm": vdm})
    assert message in str(e.value)
