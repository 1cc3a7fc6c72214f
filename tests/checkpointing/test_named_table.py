"""`meddiff models`: a short table with the recommended model of each task marked from models.yaml; NAME or
--long the full cards (issue 29.6)."""

from __future__ import annotations

import collections

import pytest
import yaml

from meddiff.checkpointing import named as models
from meddiff.cli import main


@pytest.fixture(autouse=True)
def _no_local_runs(tmp_path, monkeypatch):
    """`meddiff models` also lists run folders under ./runs: run from an empty folder so only shipped models count."""
    monkeypatch.chdir(tmp_path)


def _rows(out: str) -> dict[str, str]:
    return {line.split()[0]: line for line in out.splitlines()[1:] if line and not line.startswith(("*", "("))}


def test_the_default_is_a_short_table_marking_one_recommended_model_per_task(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) < 25
    assert out.splitlines()[0].split()[:2] == ["name", "task"] and "default sampler" in out.splitlines()[0]
    rows = _rows(out)
    assert set(rows) == {c.name for c in models.shipped_models()}
    assert "sr_x4_general *" in rows["sr_x4_general"] and "*" not in rows["demo_sr_x4"].split()[1]
    assert "posterior_mean, 1 call" in rows["sr_x4_general"] and "dpm_solver_pp, 10 steps" in rows["demo_sr_x4"]
    assert "vs bicubic" in rows["sr_x4_general"]
    per_task = collections.Counter(c.short_task for c in models.shipped_models() if c.recommended)
    assert set(per_task) == {c.short_task for c in models.shipped_models()} and set(per_task.values()) == {1}


def test_the_mark_comes_from_the_registry(tmp_path, monkeypatch, capsys):
    entries = yaml.safe_load(models.REGISTRY.read_text())
    entries["sr_x4_general"]["recommended"] = False
    entries["demo_sr_x4"]["recommended"] = True
    registry = tmp_path / "models.yaml"
    registry.write_text(yaml.safe_dump(entries))
    monkeypatch.setattr(models, "REGISTRY", registry)
    assert main(["models"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert "demo_sr_x4 *" in rows["demo_sr_x4"] and "sr_x4_general *" not in rows["sr_x4_general"]


def test_a_name_or_long_prints_full_cards(capsys):
    assert main(["models", "sr_x4_general"]) == 0
    card = capsys.readouterr().out
    assert "training data:" in card and "[recommended for super-resolution x4]" in card and "demo_sr_x4" not in card.split("\n")[0]
    assert main(["models", "--long"]) == 0
    long = capsys.readouterr().out
    assert long.count("training data:") == len(models.shipped_models()) and len(long.splitlines()) > 100
