"""DistillObjective (meddiff.objectives.distill): a student equal to its teacher has zero loss on the teacher's
one-call output, the student's config must match its teacher's and name one, and the CLI path teacher ->
`meddiff train` (objective distill) -> `meddiff sample` with the student's stored sampler."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from meddiff import cli
from meddiff import config as config_mod
from meddiff.data.prepare import PrepareOptions, prepare
from meddiff.diffusion.checkpoint import load_model
from meddiff.errors import ConfigError
from meddiff.objectives.distill import load_teacher, student_loss
from meddiff.samplers.ddim import sample_ddim
from meddiff.samplers.noise import generators_for, randn_per_image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from distill.conftest import TINY, planes, tiny_denoiser  # noqa: E402


def test_a_student_equal_to_its_teacher_has_zero_loss_on_the_one_call_target_only():
    den, c, seeds = tiny_denoiser(), planes(), [1, 2, 3]
    x_T = randn_per_image((3, 1, 16, 16), generators_for(seeds), "cpu")
    one_call = sample_ddim(den, c, den.time_grid(1), eta=0.0, generators=generators_for(seeds), clip=False)
    with torch.no_grad():
        assert float(student_loss(den, x_T, c, one_call)) < 1e-12
        several = sample_ddim(den, c, den.time_grid(5), eta=0.0, generators=generators_for(seeds), clip=False)
        assert float(student_loss(den, x_T, c, several)) > 1e-6  # the teacher's chain is not its first call


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32]
    for p in range(2):
        d = root / "in" / f"patient{p}"
        d.mkdir(parents=True)
        for i in range(2):
            img = 120 + 100 * np.sin(xx / (3 + p + i)) * np.cos(yy / 5) + rng.normal(0, 5, (32, 32))
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(d / f"s{i}.png")
    prepare(root / "in", root / "prep", PrepareOptions(size=16, split=(0.5, 0.5, 0.0), min_foreground=0.0), progress=False)
    args = ["train", "--no-progress", "--out", str(root / "teacher"), "--config", "configs/sr_x4.yaml",
            f"data.prepared={root / 'prep'}", *TINY, "train.steps=2", "train.ckpt_every=2", "sampler.steps=5"]
    assert cli.main(args) == 0
    return root


def test_distil_through_meddiff_train_then_sample_with_the_student(teacher, tmp_path, capsys):
    common = ["--config", "configs/sr_x4.yaml", f"data.prepared={teacher / 'prep'}", *TINY, "objective=distill",
              f"distill.teacher={teacher / 'teacher'}", "distill.steps=3", "distill.items=4", "distill.val_items=2",
              "distill.batch_size=2", "sampler.name=student", "sampler.steps=1", "train.ckpt_every=2"]
    out = tmp_path / "student"
    assert cli.main(["train", "--no-progress", "--out", str(out), *common, "train.steps=2", "train.tensorboard=true"]) == 0
    assert (out / "distill_targets.safetensors").is_file() and (out / "distill_targets_val.safetensors").is_file()
    assert len((out / "val_log.csv").read_text().splitlines()) == 2  # header + step 2
    cfg, _, _ = load_model(out)
    assert (cfg.objective, cfg.sampler.name, cfg.sampler.steps) == ("distill", "student", 1)
    Image.fromarray((np.arange(64).reshape(8, 8) * 4).astype(np.uint8)).save(tmp_path / "low.png")
    capsys.readouterr()
    assert cli.main(["sample", "--checkpoint", str(out), "--input", str(tmp_path / "low.png"), "--output",
                     str(tmp_path / "sr"), "--no-progress", "--device", "cpu"]) == 0
    written = sorted((tmp_path / "sr").rglob("*.png"))
    assert written and Image.open(written[0]).size == (32, 32)


def test_student_config_must_match_the_teacher_and_name_one(teacher):
    cfg = config_mod.load("configs/sr_x4.yaml", [*TINY, "objective=distill", f"distill.teacher={teacher / 'teacher'}",
                                                 "sampler.name=student", "model.channels=[8,8]"])
    with pytest.raises(ConfigError, match=r"model.channels \(\[8, 16\] in the teacher"):
        load_teacher(cfg)
    with pytest.raises(ConfigError, match="distill.teacher: objective distill needs a teacher"):
        config_mod.load("configs/sr_x4.yaml", ["objective=distill"])
    with pytest.raises(ConfigError, match="sampler.name: a distilled student samples with 'student'"):
        config_mod.load("configs/sr_x4.yaml", ["objective=distill", "distill.teacher=x"])
