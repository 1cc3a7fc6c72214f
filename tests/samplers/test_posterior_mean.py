"""The posterior-mean sampler: one network call, the x0 estimate every sampler returns after one step."""

import torch

from meddiff.diffusion.checkpoint import load_model
from meddiff.samplers.run import restore, sampler_options
from meddiff.samplers.noise import generators_for
from meddiff.samplers.ddim import sample_ddim
from meddiff.samplers.dpm_solver import sample_dpm_solver_pp
from meddiff.samplers.posterior_mean import sample_posterior_mean

SHIPPED = __import__("pathlib").Path(__file__).resolve().parents[2] / "src/meddiff/checkpoints/demo_sr_x4.safetensors"


def test_one_call_equals_one_step_of_ddim_and_dpm_solver():
    _, _, den = load_model(SHIPPED)
    cond = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    calls = []
    counting = type("C", (), {"__call__": lambda self, *a: calls.append(1) or den(*a),
                              "__getattr__": lambda self, n: getattr(den, n)})()
    a = sample_posterior_mean(counting, cond, generators=generators_for([3, 4]))
    assert len(calls) == 1
    b = sample_dpm_solver_pp(den, cond, den.time_grid(1, "uniform"), generators=generators_for([3, 4]), order=1)
    c = sample_ddim(den, cond, den.time_grid(1, "uniform"), generators=generators_for([3, 4]), eta=0.0)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a, c, rtol=0, atol=1e-6)


def test_restore_runs_it_in_one_call_whatever_steps_say():
    _, _, den = load_model(SHIPPED)
    cond = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    x = restore(den, cond, sampler="posterior_mean", steps=10, seed=0, progress=False,
                **sampler_options("posterior_mean", "beta", 0.0))
    y = restore(den, cond, sampler="dpm_solver_pp", steps=1, seed=0, progress=False, grid="uniform")
    torch.testing.assert_close(x, y, rtol=0, atol=0)
