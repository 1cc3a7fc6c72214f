"""Checkpoints written before the baseline section lost its unused HPUNet keys still load."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from meddiff import config as config_mod
from meddiff.errors import CheckpointError
from meddiff.checkpointing import config_from_yaml


def stored_config_text(**baseline_extra) -> str:
    values = dataclasses.asdict(config_mod.from_dict({}))
    values["baseline"].update(baseline_extra)
    return yaml.safe_dump(values)


def test_old_unused_keys_at_their_only_value_are_dropped():
    cfg = config_from_yaml(stored_config_text(latent_levels=3, latent_dim=8, kl_weight=1.0), Path("old.safetensors"))
    assert cfg == config_mod.from_dict({})


def test_old_key_with_another_value_is_still_an_error_naming_it():
    with pytest.raises(CheckpointError, match=r"old.safetensors: the stored config is invalid .*latent_dim"):
        config_from_yaml(stored_config_text(latent_dim=4), Path("old.safetensors"))


def test_stored_config_without_ema_warmup_keeps_the_constant_decay_it_was_trained_with():
    values = dataclasses.asdict(config_mod.from_dict({}))
    del values["train"]["ema_warmup"]
    cfg = config_from_yaml(yaml.safe_dump(values), Path("old.safetensors"))
    assert cfg.train.ema_warmup is False  # a checkpoint written before issue 19
    assert config_mod.from_dict({}).train.ema_warmup is True  # new configs warm up
