"""Two CPU processes (gloo) under torchrun: ranks stay identical, only rank 0 writes, and the
result equals one process with the doubled batch (DDP averages gradients over the shards)."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file


from .conftest import TinyPairs, tiny_config, tiny_vdm_config, train

WORKER = Path(__file__).with_name("ddp_worker.py")


def test_two_rank_gloo_run_matches_single_process_with_double_batch(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    # torchrun as `python -m torch.distributed.run`: the same launcher, found even when the
    # venv's bin/ is not on PATH (make test calls .venv/bin/python directly)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(WORKER), str(tmp_path / "out"), str(tmp_path / "dump"), "2"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "loss.png", "train_log.csv"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["latest", "step_0000003"]
    assert [r["step"] for r in csv.DictReader(open(out / "train_log.csv"))] == ["1", "2", "3"]  # written once
    r0, r1 = load_file(str(tmp_path / "dump" / "rank0.safetensors")), load_file(str(tmp_path / "dump" / "rank1.safetensors"))
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k  # ranks identical, EMA included
    saved = load_file(str(out / "checkpoints" / "step_0000003" / "model.safetensors"))
    for k, v in saved.items():
        assert torch.equal(v, r0[f"ema.{k}"]), k

    single = train(tiny_config(tmp_path / "single", dropout=0.0, steps=3, batch_size=4), TinyPairs(), progress=False)
    ema = load_file(str(single.checkpoint / "model.safetensors"))
    raw = load_file(str(single.checkpoint / "train_state.safetensors"))
    moved = 0.0
    for k, v in ema.items():
        torch.testing.assert_close(r0[f"ema.{k}"], v, rtol=0, atol=1e-5)
        torch.testing.assert_close(r0[f"model.{k}"], raw[f"model.{k}"], rtol=0, atol=1e-5)
        moved = max(moved, (raw[f"model.{k}"] - r0[f"model.{k}"]).abs().max().item())
    assert moved < 1e-5


def test_two_rank_vdm_run_matches_single_process_with_double_batch(tmp_path):
    """The VDM under torchrun: noise keyed by global position with one antithetic offset per step
    (vdm.vlb.position_noise) and gradients averaged by hand (the VLB and the schedule's
    variance gradient alike) give the single-process run with the double batch."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(WORKER),
           str(tmp_path / "out"), str(tmp_path / "dump"), "2", "vdm"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = load_file(str(tmp_path / "dump" / "rank0.safetensors")), load_file(str(tmp_path / "dump" / "rank1.safetensors"))
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    single = train(tiny_vdm_config(tmp_path / "single", steps=3, batch_size=4, lr_decay_steps=3), TinyPairs(),
                        progress=False)
    ema = load_file(str(single.checkpoint / "model.safetensors"))
    raw = load_file(str(single.checkpoint / "train_state.safetensors"))
    assert {"gamma.l2.weight"} <= ema.keys()  # the learned schedule is part of the comparison
    for k, v in ema.items():
        torch.testing.assert_close(r0[f"ema.{k}"], v, rtol=0, atol=1e-5)
        torch.testing.assert_close(r0[f"model.{k}"], raw[f"model.{k}"], rtol=0, atol=1e-5)
