"""train.tensorboard: the CSV logs' scalars also land in TensorBoard event files, at the same steps."""

from __future__ import annotations

import csv

import pytest

from meddiff.train import loop

from .conftest import TinyPairs, tiny_config


def test_tensorboard_events_match_the_csv(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = loop.train(tiny_config(tmp_path, steps=4, log_every=2, tensorboard=True), TinyPairs(),
                     val_set=TinyPairs(5, seed=9), progress=False)
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert {"train/loss", "train/lr", "val/val_loss"} <= set(acc.Tags()["scalars"])
    rows = list(csv.DictReader(open(out.log)))
    events = acc.Scalars("train/loss")
    assert [e.step for e in events] == [int(r["step"]) for r in rows]
    assert [e.value for e in events] == pytest.approx([float(r["loss"]) for r in rows], rel=1e-5)
    assert [e.step for e in acc.Scalars("val/val_loss")] == [3, 4]


def test_off_by_default(tmp_path):
    loop.train(tiny_config(tmp_path, steps=2, log_every=1), TinyPairs(), progress=False)
    assert not (tmp_path / "tensorboard").exists()
