"""Checkpoint folders: exact round trips, atomicity, and the errors of load_model."""

import errno
import json
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import save_file

from meddiff import config as config_mod
from meddiff.errors import CheckpointError
from meddiff.nn.unet import build_unet
from meddiff import checkpointing as ck
from meddiff.checkpointing import folders
from meddiff.diffusion.checkpoint import load_model
from meddiff.train.ema import ema_copy, ema_update

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from train.conftest import tiny_config  # noqa: E402


def _trained_parts(cfg, steps=2, seed=0):
    """A tiny net (2 input channels: denoise), its EMA and an AdamW after `steps` updates."""
    torch.manual_seed(seed)
    net = build_unet(cfg.model, 2, 1)
    ema = ema_copy(net)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    for _ in range(steps):
        x = torch.randn(2, 2, 8, 8)
        loss = net(x, torch.tensor([1, 7])).pow(2).mean() + sum(p.pow(2).sum() for p in net.parameters()) * 1e-3
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema_update(ema, net, 0.5)
    return net, ema, opt


def _save(cfg, root, step, parts, **kw):
    net, ema, opt = parts
    return ck.save_checkpoint(root, step, cfg, net, ema, opt, None, in_channels=2, **kw)


def test_round_trip_restores_weights_ema_optimiser_and_step_exactly(tmp_path):
    cfg = tiny_config(tmp_path)
    parts = _trained_parts(cfg)
    d = _save(cfg, tmp_path / "checkpoints", 2, parts, elapsed_s=12.5)
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step_0000002"
    assert sorted(p.name for p in d.iterdir()) == ["config.yaml", "model.safetensors", "train_state.json", "train_state.safetensors"]
    fresh = _trained_parts(cfg, steps=0, seed=1)
    st = ck.load_train_state(d, *fresh)
    assert (st.step, st.elapsed_s) == (2, 12.5)
    for a, b in zip(parts[0].state_dict().values(), fresh[0].state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(parts[1].state_dict().values(), fresh[1].state_dict().values()):
        assert torch.equal(a, b)
    sa, sb = parts[2].state_dict(), fresh[2].state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    for i in sa["state"]:
        for key in sa["state"][i]:
            assert torch.equal(sa["state"][i][key], sb["state"][i][key]), (i, key)
    assert ck.read_config(d) == cfg


def test_model_file_metadata_and_load_model_from_dir_file_run_and_export(tmp_path):
    cfg = tiny_config(tmp_path)
    parts = _trained_parts(cfg)
    d = _save(cfg, tmp_path / "checkpoints", 7, parts)
    with safe_open(str(d / "model.safetensors"), "pt") as f:
        meta = f.metadata()
    assert meta["format"] == "meddiff-ddpm-v1" and meta["task"] == "denoise"
    assert (meta["in_channels"], meta["out_channels"], meta["step"]) == ("2", "1", "7")
    assert config_mod.from_dict(yaml.safe_load(meta["config"])) == cfg
    exported = ck.export_model(tmp_path, tmp_path / "demo" / "model.safetensors")  # run folder -> latest
    for source in (d, d / "model.safetensors", tmp_path, exported):
        cfg2, net, den = load_model(source, expect_task="denoise")
        assert cfg2 == cfg and not net.training and den.sched.timesteps == 50
        for a, b in zip(parts[1].state_dict().values(), net.state_dict().values()):
            assert torch.equal(a, b)  # EMA weights, not the raw ones
    assert not torch.equal(parts[0].conv_in.weight, net.conv_in.weight)


def test_load_model_refuses_another_task(tmp_path):
    cfg = tiny_config(tmp_path)
    d = _save(cfg, tmp_path / "c", 1, _trained_parts(cfg, 1))
    with pytest.raises(CheckpointError, match="trained for task 'denoise', but task 'sr' was requested"):
        load_model(d, expect_task="sr")


def test_load_model_names_tensor_and_both_shapes_when_config_does_not_match(tmp_path):
    cfg = tiny_config(tmp_path)
    d = _save(cfg, tmp_path / "c", 1, _trained_parts(cfg, 1))
    tensors, meta = ck.read_safetensors(d / "model.safetensors")
    values = config_mod.to_dict(cfg)
    values["model"]["channels"] = [4, 16]
    meta["config"] = yaml.safe_dump(values)
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata=meta)
    with pytest.raises(CheckpointError, match=r"tensor time_mlp.0.weight has shape \(32, 8\) in the checkpoint but the configured model expects \(16, 4\)"):
        load_model(bad)


def test_load_model_rejects_missing_corrupt_and_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nope.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(CheckpointError, match="garbage.safetensors is corrupt or not a safetensors file"):
        load_model(garbage)
    cfg = tiny_config(tmp_path)
    d = _save(cfg, tmp_path / "c", 1, _trained_parts(cfg, 1))
    data = (d / "model.safetensors").read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.safetensors is corrupt"):
        load_model(truncated)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="not a meddiff checkpoint"):
        load_model(foreign)
    with pytest.raises(CheckpointError, match="without model.safetensors"):
        load_model(tmp_path / "c" / "..")  # a folder with neither a model nor checkpoints/latest


def test_full_disk_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path)
    parts = _trained_parts(cfg, 1)
    root = tmp_path / "checkpoints"
    first = _save(cfg, root, 1, parts)
    before = (first / "model.safetensors").read_bytes()

    def full_disk(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(folders, "save_file", full_disk)
    with pytest.raises(CheckpointError, match=r"could not write checkpoint .*step_0000002: No space left on device"):
        _save(cfg, root, 2, parts)
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_0000001"]  # no temporary left behind
    assert ck.latest_checkpoint(root) == first
    assert (first / "model.safetensors").read_bytes() == before
    load_model(root)


def test_keep_last_prunes_only_older_complete_checkpoints(tmp_path):
    cfg = tiny_config(tmp_path)
    parts = _trained_parts(cfg, 1)
    root = tmp_path / "checkpoints"
    for step in (1, 2, 3, 4):
        _save(cfg, root, step, parts, keep_last=2)
    assert [p.name for p in ck.list_checkpoints(root)] == ["step_0000003", "step_0000004"]
    assert ck.latest_checkpoint(root).name == "step_0000004"


def test_load_model_from_the_latest_pointer_file(tmp_path):
    cfg = tiny_config(tmp_path)
    root = tmp_path / "checkpoints"
    for step, seed in ((1, 0), (2, 1)):
        parts = _trained_parts(cfg, 1, seed=seed)
        _save(cfg, root, step, parts)
    assert ck.resolve_model_file(root / "latest") == root / "step_0000002" / "model.safetensors"
    _, net, _ = load_model(root / "latest")
    for a, b in zip(parts[1].state_dict().values(), net.state_dict().values()):
        assert torch.equal(a, b)  # the EMA of step 2 (seed 1), not step 1's
    (root / "latest").write_text("step_0000009\n")
    with pytest.raises(CheckpointError, match="names 'step_0000009'"):
        load_model(root / "latest")


def test_latest_pointing_at_missing_folder_is_an_error(tmp_path):
    (tmp_path / "latest").write_text("step_0000009\n")
    with pytest.raises(CheckpointError, match="names 'step_0000009', which is not a complete checkpoint"):
        ck.latest_checkpoint(tmp_path)


def test_train_state_json_is_plain_json(tmp_path):
    cfg = tiny_config(tmp_path)
    d = _save(cfg, tmp_path / "c", 3, _trained_parts(cfg, 1))
    info = json.loads((d / "train_state.json").read_text())
    assert info["step"] == 3 and info["optimizer"]["param_groups"][0]["lr"] == 1e-3


def test_half_export_is_half_the_size_and_loads_within_fp16_rounding(tmp_path):
    cfg = tiny_config(tmp_path)
    parts = _trained_parts(cfg)
    d = _save(cfg, tmp_path / "checkpoints", 3, parts)
    full = ck.export_model(d, tmp_path / "full.safetensors")
    half = ck.export_model(d, tmp_path / "half.safetensors", half=True)
    with safe_open(str(half), "pt") as f:
        assert f.metadata()["stored_dtype"] == "float16"
        assert all(f.get_tensor(k).dtype == torch.float16 for k in f.keys())
    assert half.stat().st_size < 0.6 * full.stat().st_size
    _, net, _ = load_model(half, expect_task="denoise")
    for a, b in zip(parts[1].state_dict().values(), net.state_dict().values()):
        assert b.dtype == torch.float32
        torch.testing.assert_close(b, a.half().float(), rtol=0, atol=0)  # exactly the fp16 rounding
