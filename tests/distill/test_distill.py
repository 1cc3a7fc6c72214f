"""Distillation (meddiff.distill, samplers.student): the targets are the teacher's sampler output
bit for bit, a student equal to its teacher has zero loss on the teacher's one-call output, the
target file resumes / refuses other settings, and the CLI path teacher -> `meddiff train`
(objective distill) -> `meddiff sample` with the student's stored sampler."""

import numpy as np
import pytest
import torch
from PIL import Image

from meddiff import cli
from meddiff import config as config_mod
from meddiff.data.dataset import Pair
from meddiff.data.prepare import PrepareOptions, prepare
from meddiff.diffusion.checkpoint import load_model
from meddiff.diffusion.denoiser import DDPMDenoiser
from meddiff.diffusion.schedule import build_schedule
from meddiff.objectives.distill import load_teacher, student_loss
from meddiff.distill.targets import build_targets, teacher_targets
from meddiff.errors import ConfigError, InputError
from meddiff.samplers.run import restore
from meddiff.nn.unet import build_unet
from meddiff.samplers.ddim import sample_ddim
from meddiff.samplers.dpm_solver import sample_dpm_solver_pp
from meddiff.samplers.noise import generators_for, randn_per_image
from meddiff.samplers.posterior_mean import sample_posterior_mean
from meddiff.samplers.student import sample_student

TINY = ["model.channels=[8,16]", "model.attention_levels=[false,true]", "model.norm_groups=4",
        "model.num_res_blocks=1", "model.num_heads=2", "diffusion.timesteps=50", "diffusion.prediction=x0",
        "diffusion.residual=true", "train.batch_size=2", "train.log_every=1", "train.device=cpu", "train.threads=1",
        "data.size=16"]


def tiny_denoiser() -> DDPMDenoiser:
    """An untrained x0-predicting residual U-Net (output conv randomised so it matters), fixed seed."""
    cfg = config_mod.load(None, [o for o in TINY if o.split(".")[0] in ("model", "diffusion")])
    torch.manual_seed(0)
    net = build_unet(cfg.model, 2, 1)
    with torch.no_grad():
        for p in net.conv_out.parameters():
            p.normal_(0, 0.3)
    return DDPMDenoiser(net.eval(), build_schedule(cfg.diffusion), "x0", True)


def planes(n=3, size=16, seed=1) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("sampler, grid", [("dpm_solver_pp", "logsnr"), ("ddim", "uniform")])
def test_targets_are_the_teachers_sampler_output_bit_for_bit(sampler, grid):
    den, c, seeds = tiny_denoiser(), planes(), [5, 6, 7]
    x_T, target = teacher_targets(den, c, seeds, sampler, 4, "auto")
    times = den.time_grid(4, grid)
    fn = sample_dpm_solver_pp if sampler == "dpm_solver_pp" else sample_ddim
    ref = fn(den, c, times, generators=generators_for(seeds), **({"eta": 0.0} if sampler == "ddim" else {}))
    assert torch.equal(target, ref)
    assert torch.equal(x_T, randn_per_image(x_T.shape, generators_for(seeds), "cpu"))


def test_a_student_equal_to_its_teacher_has_zero_loss_on_the_one_call_target_only():
    den, c, seeds = tiny_denoiser(), planes(), [1, 2, 3]
    x_T = randn_per_image((3, 1, 16, 16), generators_for(seeds), "cpu")
    one_call = sample_ddim(den, c, den.time_grid(1), eta=0.0, generators=generators_for(seeds), clip=False)
    with torch.no_grad():
        assert float(student_loss(den, x_T, c, one_call)) < 1e-12
        several = sample_ddim(den, c, den.time_grid(5), eta=0.0, generators=generators_for(seeds), clip=False)
        assert float(student_loss(den, x_T, c, several)) > 1e-6  # the teacher's chain is not its first call


def test_one_call_student_sampler_is_the_first_call_of_the_chain():
    den, c = tiny_denoiser(), planes()
    a = sample_student(den, c, generators=generators_for([4, 5, 6]))
    b = sample_posterior_mean(den, c, generators=generators_for([4, 5, 6]))
    assert torch.equal(a, b)
    out = restore(den, c, sampler="student", steps=1, seed=3, progress=False)
    assert out.shape == (1, 3, 1, 16, 16) and out.abs().max() <= 1


def test_target_file_resumes_extends_and_refuses_other_settings(tmp_path):
    path, calls = tmp_path / "t.safetensors", []

    def item(i):
        return Pair(torch.full((1, 4, 4), i / 10), torch.full((1, 4, 4), -i / 10), torch.zeros(1, 4, 4), f"c{i}")

    def make(p, seeds):
        calls.append(list(seeds))
        return torch.stack([torch.full((1, 4, 4), float(s)) for s in seeds]), -p

    def build(count, key="k"):
        return build_targets(path, key, count, item, lambda pair: pair.cond, make, lambda i: 100 + i, 2, progress=False)

    first = build(3)
    assert calls == [[100, 101], [102]] and first["target"].shape == (3, 1, 4, 4)
    again = build(5)  # resumes after the 3 stored targets
    assert calls[2:] == [[103, 104]] and torch.equal(again["noise"][:, 0, 0, 0], torch.arange(100, 105).float())
    assert torch.equal(again["target"][:, 0, 0, 0], torch.arange(5) / 10)
    assert build(2)["target"].shape[0] == 2 and len(calls) == 3  # fewer: read, nothing computed
    with pytest.raises(InputError, match="other settings"):
        build(5, key="other")


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
