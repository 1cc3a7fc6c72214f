"""train.tensorboard: the CSV logs' scalars also land in TensorBoard event files, at the same steps."""

from __future__ import annotations

import csv

import pytest
import torch


from .conftest import TinyPairs, tiny_config, train


def test_tensorboard_events_match_the_csv(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = train(tiny_config(tmp_path, steps=4, log_every=2, tensorboard=True), TinyPairs(),
                     val_set=TinyPairs(5, seed=9), progress=False)
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert {"train/loss", "train/lr", "val/val_loss"} <= set(acc.Tags()["scalars"])
    rows = list(csv.DictReader(open(out.log)))
    events = acc.Scalars("train/loss")
    assert [e.step for e in events] == [int(r["step"]) for r in rows]
    assert [e.value for e in events] == pytest.approx([float(r["loss"]) for r in rows], rel=1e-5)
    assert [e.step for e in acc.Scalars("val/val_loss")] == [3, 4]
    (tag,) = acc.Tags()["images"]  # one grid per checkpoint: 4 items, [condition | sample | truth]
    assert "sample" in tag and [e.step for e in acc.Images(tag)] == [3, 4]
    assert (acc.Images(tag)[0].width, acc.Images(tag)[0].height) == (4 * 3 * 8, 8)  # 4 items of 8x(3x8), tiled


def test_sample_grid_leaves_training_unchanged(tmp_path):
    """A run with TensorBoard grids ends with the same weights as one without (no RNG is consumed)."""
    pytest.importorskip("tensorboard")
    from safetensors.torch import load_file

    runs = [train(tiny_config(tmp_path / name, steps=4, log_every=2, tensorboard=tb), TinyPairs(),
                       val_set=TinyPairs(5, seed=9), progress=False) for name, tb in (("a", True), ("b", False))]
    a, b = (load_file(str(r.checkpoint / "model.safetensors")) for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_off_by_default(tmp_path):
    train(tiny_config(tmp_path, steps=2, log_every=1), TinyPairs(), progress=False)
    assert not (tmp_path / "tensorboard").exists()
