"""Issue 19: after a short real-data run the EMA weights that sampling uses must be at least as
good as the raw weights, and a run whose EMA is still mostly initialisation must say so.

A tiny pixel-space VDM (U-Net score network, configs/vdm_brain_unet.yaml made small) is trained
for 40 steps on the shipped MNI152 slices at 16x16 and scored by held-out bits/dim on Colin27
(another person), with the same Monte-Carlo draws for the EMA and the raw weights."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from meddiff.cli import main
from meddiff.data.dataset import PairDataset, load_prepared
from meddiff.data.prepare import PrepareOptions, prepare
from meddiff.data.samples import samples_dir
from meddiff.checkpointing.ema import EMAWarning
from meddiff.checkpointing.weights import load_raw_weights
from meddiff.vdm.build import NoCondition
from meddiff.vdm.checkpoint import load_vdm
from meddiff.vdm.generate import heldout_bpd

TINY = ["model.channels=[8,16]", "model.norm_groups=4", "model.attention_levels=[false,true]", "vdm.gamma=fixed_linear",
        "data.size=16", "train.batch_size=16", "train.steps=40", "train.ckpt_every=40", "train.log_every=10",
        "train.warmup_steps=5", "train.lr=3.0e-3", "train.device=cpu", "train.threads=1", "train.ema_decay=0.995"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ema_budget")
    prepare(samples_dir("mni152"), root / "mni", PrepareOptions(size=16), progress=False)
    prepare(samples_dir("colin27"), root / "colin", PrepareOptions(size=16, split=(0, 0, 1)), progress=False)
    caught = {}
    for name, warmup in (("warmup", "true"), ("constant", "false")):
        with torch.random.fork_rng(), warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            assert main(["train", "--no-progress", "--out", str(root / name), "--config", "configs/vdm_brain_unet.yaml",
                         f"data.prepared={root / 'mni'}", *TINY, f"train.ema_warmup={warmup}"]) == 0
        caught[name] = [str(x.message) for x in w if issubclass(x.category, EMAWarning)]
    return root, caught


def _heldout(model, root) -> np.ndarray:
    ds = PairDataset(load_prepared(root / "colin"), "test", NoCondition(), train=False)
    return heldout_bpd(model, ds, timesteps=0, vocab_size=256, seed=7, batch_size=64, draws=2).per_slice["total"]


def test_ema_with_warmup_is_no_worse_than_the_raw_weights_held_out(runs):
    root, _ = runs
    vdm = load_vdm(root / "warmup")
    ema = _heldout(vdm.model, root)
    load_raw_weights(vdm.model, root / "warmup")
    raw = _heldout(vdm.model, root)
    assert ema.mean() <= raw.mean() + 0.02, (ema.mean(), raw.mean())


def test_constant_decay_ema_is_far_worse_than_raw_after_a_short_run(runs):
    root, _ = runs
    vdm = load_vdm(root / "constant")
    ema = _heldout(vdm.model, root)
    load_raw_weights(vdm.model, root / "constant")
    assert ema.mean() > _heldout(vdm.model, root).mean() + 0.5  # 0.995^40 = 82% of the init left


def test_end_of_training_warning_fires_for_constant_decay_only(runs):
    _, caught = runs
    assert caught["warmup"] == []
    assert len(caught["constant"]) == 1 and "81.8% of the initial weights" in caught["constant"][0]


@pytest.mark.parametrize("name,warns", [("constant", True), ("warmup", False)])
def test_sampling_warns_for_ema_weights_only_and_raw_weights_differ(runs, tmp_path, name, warns):
    root, _ = runs
    grids = {}
    for weights in ("ema", "raw"):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            assert main(["sample", "--checkpoint", str(root / name), "--output", str(tmp_path / weights), "--num", "2",
                         "--steps", "4", "--weights", weights, "--no-progress"]) == 0
        fired = [x for x in w if issubclass(x.category, EMAWarning)]
        assert len(fired) == (1 if warns and weights == "ema" else 0)
        grids[weights] = (tmp_path / weights / "grid.png").read_bytes()
    assert grids["ema"] != grids["raw"]


def test_raw_weights_of_an_exported_model_file_are_refused_naming_the_file(runs, tmp_path, capsys):
    from meddiff.train.checkpoint import export_model

    root, _ = runs
    file = export_model(root / "warmup", tmp_path / "model.safetensors")
    assert main(["sample", "--checkpoint", str(file), "--output", str(tmp_path / "o"), "--weights", "raw"]) != 0
    err = capsys.readouterr().err
    assert "model.safetensors has no train_state.safetensors beside it" in err
