"""Distillation (meddiff.distill, samplers.student): the targets are the teacher's sampler output
bit for bit, the one-call student sampler is the first call of the chain, and the target file
resumes / refuses other settings. The student's loss, the teacher check and the CLI path teacher ->
`meddiff train` (objective distill) -> `meddiff sample` are the objective's (tests/objectives/test_distill.py)."""

import pytest
import torch

from meddiff.data.dataset import Pair
from meddiff.distill.targets import build_targets, teacher_targets
from meddiff.errors import InputError
from meddiff.samplers.run import restore
from meddiff.samplers.ddim import sample_ddim
from meddiff.samplers.dpm_solver import sample_dpm_solver_pp
from meddiff.samplers.noise import generators_for, randn_per_image
from meddiff.samplers.posterior_mean import sample_posterior_mean
from meddiff.samplers.student import sample_student

from .conftest import planes, tiny_denoiser


@pytest.mark.parametrize("sampler, grid", [("dpm_solver_pp", "logsnr"), ("ddim", "uniform")])
def test_targets_are_the_teachers_sampler_output_bit_for_bit(sampler, grid):
    den, c, seeds = tiny_denoiser(), planes(), [5, 6, 7]
    x_T, target = teacher_targets(den, c, seeds, sampler, 4, "auto")
    times = den.time_grid(4, grid)
    fn = sample_dpm_solver_pp if sampler == "dpm_solver_pp" else sample_ddim
    ref = fn(den, c, times, generators=generators_for(seeds), **({"eta": 0.0} if sampler == "ddim" else {}))
    assert torch.equal(target, ref)
    assert torch.equal(x_T, randn_per_image(x_T.shape, generators_for(seeds), "cpu"))


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
