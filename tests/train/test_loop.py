"""The training loop: exact resume, NaN handling, data order, resume refusals, logs."""

import csv
import re

import pytest
import torch
from safetensors.torch import load_file

from meddiff.errors import CheckpointError, ConfigError, InputError, TrainingError
from meddiff.train import loop
from meddiff.checkpointing import latest_checkpoint
from meddiff.diffusion.checkpoint import load_model
from meddiff.data.order import StepBatches, index_at, loss_noise, rank_positions

from .conftest import TinyPairs, tiny_config, tiny_vdm_config, train


def _tensors(ckpt_dir):
    return load_file(str(ckpt_dir / "model.safetensors")), load_file(str(ckpt_dir / "train_state.safetensors"))


def test_interrupted_and_resumed_run_ends_bitwise_equal_to_straight_run(tmp_path):
    straight = train(tiny_config(tmp_path / "a"), TinyPairs(), progress=False)
    train(tiny_config(tmp_path / "b", steps=3), TinyPairs(), progress=False)
    resumed = train(tiny_config(tmp_path / "b"), TinyPairs(), resume=True, progress=False)
    assert straight.checkpoint.name == resumed.checkpoint.name == "step_0000006"
    (ema_a, state_a), (ema_b, state_b) = _tensors(straight.checkpoint), _tensors(resumed.checkpoint)
    assert ema_a.keys() == ema_b.keys() and state_a.keys() == state_b.keys()
    for k in ema_a:
        assert torch.equal(ema_a[k], ema_b[k]), k
    for k in state_a:  # raw weights and AdamW moments
        if k != "rng.torch_cpu":
            assert torch.equal(state_a[k], state_b[k]), k
    assert not torch.equal(ema_a["conv_in.weight"], state_a["model.conv_in.weight"])  # EMA != raw weights
    # the resumed run's log has each step once
    steps = [int(r["step"]) for r in csv.DictReader(open(resumed.log))]
    assert steps == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("gamma", ["learned_nnet", "fixed_linear"])
def test_vdm_interrupted_and_resumed_run_ends_bitwise_equal_to_straight_run(tmp_path, gamma):
    """The same exact-resume guarantee under objective vdm (noise from (seed, position) and (seed, step), gamma's
    parameters and the variance-trained shape parameters in the checkpoint, cosine lr)."""
    straight = train(tiny_vdm_config(tmp_path / "a", gamma, lr_decay_steps=6), TinyPairs(), progress=False)
    train(tiny_vdm_config(tmp_path / "b", gamma, steps=3, lr_decay_steps=6), TinyPairs(), progress=False)
    resumed = train(tiny_vdm_config(tmp_path / "b", gamma, lr_decay_steps=6), TinyPairs(), resume=True, progress=False)
    (ema_a, state_a), (ema_b, state_b) = _tensors(straight.checkpoint), _tensors(resumed.checkpoint)
    assert ema_a.keys() == ema_b.keys() and state_a.keys() == state_b.keys()
    for k in ema_a:
        assert torch.equal(ema_a[k], ema_b[k]), k
    for k in state_a:
        if k != "rng.torch_cpu":
            assert torch.equal(state_a[k], state_b[k]), k
    if gamma == "learned_nnet":  # the schedule's parameters are stored and were trained
        assert {"gamma.b", "gamma.w", "gamma.l2.weight"} <= ema_a.keys()
        assert not torch.equal(state_a["model.gamma.l2.weight"], _tensors(
            train(tiny_vdm_config(tmp_path / "c", gamma, steps=1, lr=1e-30), TinyPairs(), progress=False).checkpoint)[1]["model.gamma.l2.weight"])
    else:
        assert float(ema_a["gamma.gamma_min"]) == -13.3 and float(ema_a["gamma.gamma_max"]) == 5.0
    rows = list(csv.DictReader(open(resumed.log)))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    for r in rows:  # loss = total bits/dim = the sum of the three logged terms
        parts = float(r["reconstruction_bpd"]) + float(r["latent_bpd"]) + float(r["diffusion_bpd"])
        assert float(r["loss"]) == pytest.approx(parts, rel=1e-4)


def test_nan_loss_stops_naming_step_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    from meddiff.objectives import ddpm as ddpm_objective

    real = ddpm_objective.diffusion_loss
    calls = {"n": 0}

    def nan_at_step_5(*a, **k):
        calls["n"] += 1
        out = real(*a, **k)
        return out * float("nan") if calls["n"] == 5 else out

    monkeypatch.setattr(ddpm_objective, "diffusion_loss", nan_at_step_5)
    with pytest.raises(TrainingError, match=r"loss is nan at step 5; training stopped \(last good checkpoint: .*step_0000003\)"):
        train(tiny_config(tmp_path), TinyPairs(), progress=False)
    root = tmp_path / "checkpoints"
    assert latest_checkpoint(root).name == "step_0000003"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_0000003"]
    _, net, _ = load_model(root)
    assert all(torch.isfinite(p).all() for p in net.parameters())


def test_resume_refuses_without_checkpoint_and_with_changed_config(tmp_path):
    with pytest.raises(CheckpointError, match="cannot resume: no checkpoint in .*checkpoints"):
        train(tiny_config(tmp_path), TinyPairs(), resume=True, progress=False)
    train(tiny_config(tmp_path, steps=3), TinyPairs(), progress=False)
    with pytest.raises(CheckpointError, match=r"different config: train.lr \(0.001 in the checkpoint, 0.002 now\)"):
        train(tiny_config(tmp_path, lr=2e-3), TinyPairs(), resume=True, progress=False)
    with pytest.raises(CheckpointError, match="already holds checkpoints: pass --resume"):
        train(tiny_config(tmp_path), TinyPairs(), progress=False)
    # steps / logging / checkpoint settings may change
    out = train(tiny_config(tmp_path, steps=4, log_every=2, ckpt_every=2), TinyPairs(), resume=True, progress=False)
    assert out.step == 4 and out.checkpoint.name == "step_0000004"


def test_logs_plot_and_validation(tmp_path):
    out = train(tiny_config(tmp_path, steps=4, log_every=2), TinyPairs(), val_set=TinyPairs(5, seed=9), progress=False)
    rows = list(csv.DictReader(open(out.log)))
    assert [r["step"] for r in rows] == ["2", "4"]
    assert float(rows[0]["lr"]) == pytest.approx(1e-3) and float(rows[0]["images_per_s"]) > 0
    val = list(csv.DictReader(open(out.val_log)))
    assert [r["step"] for r in val] == ["3", "4"] and all(0 < float(r["val_loss"]) < 10 for r in val)
    assert out.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_warmup_is_linear_then_constant():
    assert [loop.lr_at(s, 1.0, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert loop.lr_at(0, 1e-4, 0) == 1e-4


def test_cosine_decay_after_warmup_hits_lr_half_way_and_lr_min_at_the_end():
    lrs = [loop.lr_at(s, 1.0, 2, "cosine", 12, 0.1) for s in range(14)]
    assert lrs[:3] == [0.5, 1.0, 1.0]  # warm-up, then the decay starts from lr
    assert lrs[7] == pytest.approx(0.1 + 0.9 * 0.5)  # p = 1/2: half way between lr and lr_min
    assert lrs[12] == lrs[13] == pytest.approx(0.1)
    assert all(a > b for a, b in zip(lrs[2:12], lrs[3:13]))  # strictly decreasing during the decay


def test_cosine_to_train_steps_makes_train_steps_unresumable(tmp_path):
    train(tiny_vdm_config(tmp_path, steps=3), TinyPairs(), progress=False)
    with pytest.raises(CheckpointError, match=r"train.steps \(3 in the checkpoint, 6 now; the cosine decay ends at "
                                              r"train.steps: set train.lr_decay_steps"):
        train(tiny_vdm_config(tmp_path, steps=6), TinyPairs(), resume=True, progress=False)


def test_ranks_split_each_global_batch_and_epochs_visit_every_example_once():
    assert list(rank_positions(2, 3, 1, 2)) == [15, 16, 17]
    one = list(StepBatches(10, 0, 4, 0, 1, 0, 5))
    two = [list(StepBatches(10, 0, 2, r, 2, 0, 5)) for r in (0, 1)]
    for s in range(5):
        assert one[s] == two[0][s] + two[1][s]
    assert sorted(index_at(p, 10, 0) for p in range(10)) == list(range(10))
    assert sorted(index_at(p, 10, 0) for p in range(10, 20)) == list(range(10))
    assert [index_at(p, 10, 0) for p in range(10)] != [index_at(p, 10, 0) for p in range(10, 20)]
    k1, e1 = loss_noise(0, torch.tensor([5, 6]), 50, (1, 4, 4))
    k2, e2 = loss_noise(0, torch.tensor([6]), 50, (1, 4, 4))  # per example, not per batch
    assert torch.equal(k1[1:], k2) and torch.equal(e1[1:], e2)


@pytest.mark.parametrize("key, value, expected", [
    ("log_every", 0, ">= 1"), ("ckpt_every", -1, ">= 1"), ("ema_decay", 1.5, "in [0, 1]"), ("lr", 0.0, "> 0"),
    ("betas", (0.9, 1.0), "two values in [0, 1)"),
])
def test_unusable_train_values_are_config_errors_naming_the_key(tmp_path, key, value, expected):
    with pytest.raises(ConfigError, match=re.escape(f"train.{key}: expected {expected}")):
        train(tiny_config(tmp_path, **{key: value}), TinyPairs(), progress=False)
    assert not (tmp_path / "checkpoints").exists()


def test_empty_training_set_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="training set is empty"):
        train(tiny_config(tmp_path), TinyPairs(0), progress=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only message")
@pytest.mark.parametrize("device, message", [("cuda", "'cuda' requested but CUDA is not available"),
                                             ("gpu0", "'gpu0' is not a device")])
def test_unavailable_or_unknown_device_is_a_config_error(tmp_path, device, message):
    with pytest.raises(ConfigError, match=f"train.device: {message}"):
        train(tiny_config(tmp_path, device=device), TinyPairs(), progress=False)
