"""train.init_from: fine-tuning starts from given weights (fresh optimiser) and refuses a mismatch."""

import pytest
import torch
from safetensors.torch import load_file

from meddiff.errors import CheckpointError
from meddiff.train import loop

from .conftest import TinyPairs, tiny_config


def test_init_from_starts_from_the_given_weights_not_a_fresh_init(tmp_path):
    first = loop.train(tiny_config(tmp_path / "a", steps=3, ckpt_every=3), TinyPairs(), progress=False)
    ema = load_file(str(first.checkpoint / "model.safetensors"))
    # zero steps of training from the checkpoint: the run's weights must be the checkpoint's EMA weights
    cfg = tiny_config(tmp_path / "b", steps=1, ckpt_every=1, lr=1e-12, warmup_steps=0, ema_decay=1.0,
                      init_from=str(first.checkpoint))
    second = loop.train(cfg, TinyPairs(), progress=False)
    state = load_file(str(second.checkpoint / "train_state.safetensors"))
    for k, v in ema.items():  # lr 1e-12: one step moves nothing measurable
        assert torch.allclose(state[f"model.{k}"], v, atol=1e-8), k
    fresh = loop.train(tiny_config(tmp_path / "c", steps=1, ckpt_every=1, lr=1e-12, warmup_steps=0), TinyPairs(),
                       progress=False)
    fresh_state = load_file(str(fresh.checkpoint / "train_state.safetensors"))
    assert not torch.allclose(fresh_state["model.conv_in.weight"], ema["conv_in.weight"])


def test_init_from_a_differently_shaped_model_names_the_tensor(tmp_path):
    first = loop.train(tiny_config(tmp_path / "a", steps=1, ckpt_every=1), TinyPairs(), progress=False)
    cfg = tiny_config(tmp_path / "b", steps=1, init_from=str(first.checkpoint))
    wider = cfg.__class__(**{**cfg.__dict__, "model": cfg.model.__class__(**{**cfg.model.__dict__, "channels": (8, 24)})})
    with pytest.raises(CheckpointError, match=r"has shape .* in the checkpoint but the configured model expects"):
        loop.train(wider, TinyPairs(), progress=False)


def test_init_from_a_missing_file_is_an_error_naming_it(tmp_path):
    cfg = tiny_config(tmp_path / "b", steps=1, init_from=str(tmp_path / "nope.safetensors"))
    with pytest.raises(CheckpointError, match="nope.safetensors"):
        loop.train(cfg, TinyPairs(), progress=False)
