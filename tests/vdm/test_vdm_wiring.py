"""The VDM wired into meddiff: config section, build, checkpoints, class labels, held-out bits/dim (its trainer
step, VDMObjective: tests/objectives/test_vdm.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from meddiff import config as config_mod
from meddiff.errors import CheckpointError, ConfigError, InputError
from meddiff.diffusion.checkpoint import load_model
from meddiff.vdm.build import build_vdm, class_names, label_indices, slice_labels
from meddiff.vdm.checkpoint import load_vdm
from meddiff.vdm.generate import heldout_bpd
from meddiff.vdm.networks import ScoreNet, UNetScore
from meddiff.vdm.schedule import NoiseNetGamma

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from train.conftest import TinyPairs, tiny_config, tiny_vdm_config, train  # noqa: E402


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize("values, message", [
    ({"vdm": {"bogus": 1}}, "vdm: unknown key(s) ['bogus']"),
    ({"vdm": {"gamma": "cosine"}}, "vdm.gamma: 'cosine' is not one of"),
    ({"vdm": {"gamma_min": 5.0, "gamma_max": -13.3}}, "expected finite gamma_min < gamma_max"),
    ({"vdm": {"vocab_size": 1}}, "vdm.vocab_size: expected an integer >= 2, got 1"),
    ({"vdm": {"timesteps": -1}}, "vdm.timesteps: expected an integer >= 0"),
    ({"vdm": {"label_from": "column:"}}, "vdm.label_from: expected none, folder, file or column:NAME"),
    ({"objective": "score"}, "objective: 'score' is not one of ['ddpm', 'vdm', 'baseline', 'distill']"),
    ({"objective": "vdm", "vdm": {"n_classes": 3}}, "vdm.n_classes is 3 but vdm.label_from is 'none'"),
    ({"objective": "vdm", "vdm": {"label_from": "file"}}, "vdm.n_classes is 0 but vdm.label_from is 'file'"),
    ({"objective": "vdm", "vdm": {"score": "unet", "image_condition": True, "n_classes": 2, "label_from": "file"}},
     "conditioned on an image or on a class, not both"),
    ({"objective": "vdm", "vdm": {"image_condition": True}}, "vdm.image_condition needs vdm.score unet"),
    ({"objective": "vdm", "train": {"precision": "fp16"}}, "the VDM objective trains in fp32"),
    ({"train": {"lr_schedule": "step"}}, "train.lr_schedule: 'step' is not one of ['constant', 'cosine']"),
])
def test_bad_vdm_config_is_a_config_error_naming_the_key(values, message):
    with pytest.raises(ConfigError) as e:
        config_mod.from_dict(values)
    assert message in str(e.value)


def test_vdm_config_round_trips_and_objective_override_parses(tmp_path):
    cfg = config_mod.load("configs/vdm_brain.yaml", ["vdm.gamma=fixed_linear", "objective=vdm"])
    assert cfg.objective == "vdm" and cfg.vdm.n_classes == 3 and cfg.vdm.gamma == "fixed_linear"
    assert cfg.train.betas == (0.9, 0.99) and cfg.train.weight_decay == 1e-4 and cfg.train.lr_schedule == "cosine"
    assert config_mod.from_dict(config_mod.to_dict(cfg)) == cfg
    assert config_mod.load("configs/vdm_cxr.yaml").data.crop == 32
    old = config_mod.to_dict(config_mod.load("configs/sr_x4.yaml"))
    del old["vdm"], old["objective"]  # a config written before the vdm section existed
    assert config_mod.from_dict(old).objective == "ddpm"


def test_build_vdm_follows_the_config():
    cfg = tiny_vdm_config("x", vdm={"n_classes": 3, "label_from": "file"})
    m = build_vdm(cfg, (1, 8, 8))
    assert isinstance(m.gamma, NoiseNetGamma) and isinstance(m.score, ScoreNet) and m.class_embedding.num_embeddings == 3
    unet = config_mod.from_dict({**config_mod.to_dict(tiny_config("x")), "objective": "vdm",
                                 "vdm": {"score": "unet", "image_condition": True, "gamma": "learned_linear"}})
    m = build_vdm(unet, (1, 8, 8), cond_channels=1)
    assert isinstance(m.score, UNetScore) and m.score.unet.in_channels == 2
    with torch.no_grad():  # the learned linear gamma starts at the configured ends
        assert m.gamma(torch.tensor([0.0, 1.0])).tolist() == pytest.approx([-13.3, 5.0])


# ----------------------------------------------------------------------------- checkpoints


def test_ddpm_and_vdm_loaders_refuse_each_others_checkpoints(tmp_path):
    vdm = train(tiny_vdm_config(tmp_path / "v", steps=1), TinyPairs(), progress=False).checkpoint
    ddpm = train(tiny_config(tmp_path / "d", steps=1), TinyPairs(), progress=False).checkpoint
    with pytest.raises(CheckpointError, match=r"is a VDM \(variational diffusion\) checkpoint \(format 'meddiff-vdm-v1'\) "
                                              r"but a DDPM \(Med-cDiff\) checkpoint \(format 'meddiff-ddpm-v1'\) is needed"):
        load_model(vdm)
    with pytest.raises(CheckpointError, match=r"is a DDPM \(Med-cDiff\) checkpoint .* but a VDM .* is needed"):
        load_vdm(ddpm)
    # resuming a DDPM run with a VDM config is refused by the config check before any weights load
    with pytest.raises(CheckpointError, match=r"objective \('ddpm' in the checkpoint, 'vdm' now\)"):
        train(tiny_vdm_config(tmp_path / "d", steps=2), TinyPairs(), resume=True, progress=False)


# ----------------------------------------------------------------------------- labels


def test_labels_from_file_folder_and_column(tmp_path):
    rows = [{"case_id": "a1", "patient_id": "p1", "source": "cls_x/p1/axial.nii.gz", "grade": "2"},
            {"case_id": "a2", "patient_id": "p2", "source": "cls_y/p2/coronal.nii.gz", "grade": "1"}]
    assert slice_labels(rows, "file") == ["axial", "coronal"]
    assert slice_labels(rows, "folder") == ["cls_x", "cls_y"]
    assert slice_labels(rows, "column:grade") == ["2", "1"]
    (tmp_path / "l.csv").write_text("patient_id,dx\np1,healthy\np2,tumour\n")
    assert slice_labels(rows, "column:dx", str(tmp_path / "l.csv")) == ["healthy", "tumour"]
    with pytest.raises(InputError, match="has no column 'dx'"):
        slice_labels(rows, "column:dx")
    with pytest.raises(InputError, match="not inside a folder"):
        slice_labels([{**rows[0], "source": "axial.nii.gz"}], "folder")
    names = class_names(["b", "a", "b"], 2)
    assert names == ["a", "b"] and label_indices(["b", "a"], names) == [1, 0]
    with pytest.raises(ConfigError, match="vdm.n_classes is 3 but the labels have 2 distinct values"):
        class_names(["b", "a"], 3)
    with pytest.raises(InputError, match=r"class label\(s\) \['c'\] are not among the model's classes"):
        label_indices(["c"], names)


def test_several_draws_average_single_draws_and_shrink_the_monte_carlo_spread():
    """heldout_bpd(draws=K) is the mean of K single-draw estimates (seeds seed + 1_000_003 d), and its
    per-slice spread across independent repeats is smaller than one draw's (about 1/sqrt(K))."""
    torch.manual_seed(0)
    cfg = tiny_vdm_config("unused", "fixed_linear")
    model = build_vdm(cfg, (1, 8, 8)).eval()
    val = TinyPairs(6, seed=9)
    kw = dict(timesteps=0, vocab_size=256)
    four = heldout_bpd(model, val, seed=3, draws=4, **kw)
    singles = [heldout_bpd(model, val, seed=3 + 1_000_003 * d, **kw) for d in range(4)]
    np.testing.assert_allclose(four.per_slice["total"], np.mean([s.per_slice["total"] for s in singles], axis=0),
                               rtol=1e-12)
    one_spread = np.std([heldout_bpd(model, val, seed=100 + r, **kw).per_slice["total"] for r in range(8)], axis=0)
    four_spread = np.std([heldout_bpd(model, val, seed=100 + r, draws=4, **kw).per_slice["total"] for r in range(8)],
                         axis=0)
    assert float(np.mean(four_spread)) < 0.75 * float(np.mean(one_spread))
    with pytest.raises(InputError, match="draws 0"):
        heldout_bpd(model, val, draws=0, **kw)
