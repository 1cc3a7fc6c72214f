"""train.init_from: fine-tuning starts from given weights (fresh optimiser) and refuses a mismatch."""

import pytest
import torch
from safetensors.torch import load_file

from meddiff.errors import CheckpointError

from .conftest import TinyPairs, tiny_config, train


def test_init_from_starts_from_the_given_weights_not_a_fresh_init(tmp_path):
    first = train(tiny_config(tmp_path / "a", steps=3, ckpt_every=3), TinyPairs(), progress=False)
    ema = load_file(str(first.checkpoint / "model.safetensors"))
    # zero steps of training from the checkpoint: the run's weights must be the checkpoint's EMA weights
    cfg = tiny_config(tmp_path / "b", steps=1, ckpt_every=1, lr=1e-12, warmup_steps=0, ema_decay=1.0,
                      init_from=str(first.checkpoint))
    second = train(cfg, TinyPairs(), progress=False)
    state = load_file(str(second.checkpoint / "train_state.safetensors"))
    for k, v in ema.items():  # lr 1e-12: one step moves nothing measurable
        assert torch.allclose(state[f"model.{k}"], v, atol=1e-8), k
    fresh = train(tiny_config(tmp_path / "c", steps=1, ckpt_every=1, lr=1e-12, warmup_steps=0), TinyPairs(),
                       progress=False)
    fresh_state = load_file(str(fresh.checkpoint / "train_state.safetensors"))
    assert not torch.allclose(fresh_state["model.conv_in.weight"], ema["conv_in.weight"])


def test_init_from_a_differently_shaped_model_names_the_tensor(tmp_path):
    first = train(tiny_config(tmp_path / "a", steps=1, ckpt_every=1), TinyPairs(), progress=False)
    cfg = tiny_config(tmp_path / "b", steps=1, init_from=str(first.checkpoint))
    wider = cfg.__class__(**{**cfg.__dict__, "model": cfg.model.__class__(**{**cfg.model.__dict__, "channels": (8, 24)})})
    with pytest.raises(CheckpointError, match=r"has shape .* in the checkpoint but the configured model expects"):
        train(wider, TinyPairs(), progress=False)


def test_init_from_a_missing_file_is_an_error_naming_it(tmp_path):
    cfg = tiny_config(tmp_path / "b", steps=1, init_from=str(tmp_path / "nope.safetensors"))
    with pytest.raises(CheckpointError, match="nope.safetensors"):
        train(cfg, TinyPairs(), progress=False)


def test_a_2d_model_initialises_a_2p5d_model_that_starts_identical_and_ignores_the_neighbours():
    """widen_input_planes: the 2.5D model's extra condition planes start at zero weight, so before any
    training it is the 2D model exactly, whatever the neighbouring slices hold."""
    from meddiff.checkpointing.folders import widen_input_planes
    from meddiff.nn.unet import build_unet

    cfg = tiny_config("unused")
    torch.manual_seed(0)
    flat, wide = build_unet(cfg.model, 2, 1).eval(), build_unet(cfg.model, 6, 1).eval()
    tensors = widen_input_planes(dict(flat.state_dict()), wide.state_dict(), "flat.safetensors")
    wide.load_state_dict(tensors)
    x, cond, t = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8), torch.tensor([3, 7])
    with torch.no_grad():
        want = flat(torch.cat([x, cond], 1), t)
        for neighbours in (torch.zeros(2, 4, 8, 8), torch.randn(2, 4, 8, 8)):
            torch.testing.assert_close(wide(torch.cat([x, cond, neighbours], 1), t), want, rtol=0, atol=1e-6)
    narrower = widen_input_planes(dict(wide.state_dict()), flat.state_dict(), "wide.safetensors")
    assert narrower["conv_in.weight"].shape[1] == 6  # fewer planes is not a widening: left for load_weights to refuse
