"""Named models: `meddiff models`, --checkpoint NAME anywhere, load_pretrained."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from meddiff.checkpointing.named import local_models, resolve_checkpoint, shipped_models
from meddiff.cli import main
from meddiff.diffusion.checkpoint import load_pretrained
from meddiff.domain import DomainCard, write_card
from meddiff.errors import CheckpointError

SHIPPED = Path(__file__).resolve().parents[2] / "src" / "meddiff" / "checkpoints"


def test_every_shipped_model_has_a_full_card():
    cards = shipped_models()
    assert {c.name for c in cards} >= {"demo_sr_x4", "demo_sr_multi"}
    on_disk = {p.stem for p in SHIPPED.glob("*.safetensors")}
    assert {c.name for c in cards} == on_disk  # every shipped file is listed, and only those
    readme = (SHIPPED / "README.md").read_text()
    for c in cards:
        assert c.path.is_file() and c.format.startswith("meddiff-")
        for key in ("task", "modality", "anatomy", "training_data", "licence", "scores_source"):
            assert getattr(c, key), (c.name, key)
        assert c.scores, c.name
        assert c.readme in readme, c.name  # the section it points to exists


def test_resolve_names_and_paths(tmp_path):
    assert resolve_checkpoint("demo_sr_x4") == SHIPPED / "demo_sr_x4.safetensors"
    assert resolve_checkpoint("demo_sr_x4.safetensors") == SHIPPED / "demo_sr_x4.safetensors"
    given = tmp_path / "x.safetensors"
    given.write_bytes(b"")
    assert resolve_checkpoint(given) == given  # an existing path is taken as given
    assert resolve_checkpoint(None) is None
    with pytest.raises(CheckpointError, match="demo_sr_x4.*demo_sr_multi|demo_sr_multi.*demo_sr_x4"):
        resolve_checkpoint("demo_sr_x5", roots=[tmp_path])


def _local_tree(root: Path) -> None:
    """root/mine.safetensors (with a domain card) and root/run1 (a run folder, checkpoints/latest)."""
    root.mkdir(exist_ok=True)
    shutil.copy(SHIPPED / "demo_sr_x4.safetensors", root / "mine.safetensors")
    write_card(root / "mine.safetensors", DomainCard(modalities=("CT",), anatomy="chest", training_data="my 40 CTs",
                                                     licence="CC-BY-4.0"))
    step = root / "run1" / "checkpoints" / "step_0000010"
    step.mkdir(parents=True)
    shutil.copy(SHIPPED / "demo_sr_x4.safetensors", step / "model.safetensors")
    (root / "run1" / "checkpoints" / "latest").write_text("step_0000010\n")
    (root / "notes.txt").write_text("not a model")


def test_local_models_read_their_cards(tmp_path, monkeypatch):
    _local_tree(tmp_path / "models")
    cards = {c.name: c for c in local_models([tmp_path / "models"])}
    assert set(cards) == {"mine", "run1"}
    assert (cards["mine"].modality, cards["mine"].anatomy, cards["mine"].licence) == ("CT", "chest", "CC-BY-4.0")
    assert cards["run1"].task == "super-resolution x4" and cards["run1"].path.name == "model.safetensors"
    monkeypatch.setenv("MEDDIFF_MODELS", str(tmp_path / "models"))
    assert resolve_checkpoint("run1") == tmp_path / "models" / "run1"
    assert resolve_checkpoint("mine") == tmp_path / "models" / "mine.safetensors"


def test_models_command(tmp_path, capsys):
    _local_tree(tmp_path / "models")
    assert main(["models", "--local", str(tmp_path / "models"), "--json"]) == 0
    listed = {c["name"]: c for c in json.loads(capsys.readouterr().out)}
    assert listed["demo_sr_x4"]["origin"] == "shipped" and listed["mine"]["anatomy"] == "chest"
    assert main(["models", "demo_sr_x4"]) == 0
    out = capsys.readouterr().out
    assert "licence:" in out and "PSNR" in out and "demo_sr_multi" not in out
    assert main(["models", "nosuch"]) == 2
    assert "demo_sr_x4" in capsys.readouterr().err


def test_sample_takes_a_model_name(tmp_path, capsys):
    img = (np.add.outer(np.arange(16), np.arange(16)) * 8).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "lr.png")
    argv = ["sample", "--checkpoint", "demo_sr_x4", "-i", str(tmp_path / "lr.png"), "-o", str(tmp_path / "out"),
            "--steps", "1", "--no-progress", "--device", "cpu"]
    assert main(argv) == 0
    assert np.asarray(Image.open(tmp_path / "out" / "lr_restored.png")).shape == (64, 64)
    assert main([*argv[:2], "demo_sr_x5", *argv[3:]]) == 2
    assert "demo_sr_x4" in capsys.readouterr().err  # the unknown name lists the shipped ones


def test_load_pretrained_gives_a_working_denoiser():
    cfg, denoiser = load_pretrained("demo_sr_x4")
    assert cfg.task.kind == "sr" and not denoiser.net.training
    x = torch.zeros(1, 1, 16, 16)
    x0 = denoiser(x, torch.tensor([10]), torch.zeros(1, 1, 16, 16))
    assert x0.shape == (1, 1, 16, 16) and torch.isfinite(x0).all()
