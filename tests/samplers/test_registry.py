"""samplers.registry: the one place sampler settings are resolved over a checkpoint's stored defaults."""

import pytest

from meddiff.errors import FieldError, InputError
from meddiff.samplers.ddim import sample_ddim
from meddiff.samplers.registry import SAMPLERS, SamplingDefaults, resolve, sampler_options

STORED = SamplingDefaults("dpm_solver_pp", 10, 1.0, "auto", "fp32", "beta", 1000, "diffusion.timesteps")


def test_the_stored_defaults_apply_unless_overridden():
    spec = resolve(STORED)
    assert (spec.name, spec.steps, spec.grid, spec.precision, spec.samples) == ("dpm_solver_pp", 10, "logsnr", "fp32", 1)
    spec = resolve(STORED, sampler="ddim", steps=20, eta=0.5, precision="auto", samples=3, grid=None)
    assert (spec.name, spec.steps, spec.grid, spec.eta, spec.precision, spec.samples) == ("ddim", 20, "uniform", 0.5, "auto", 3)
    assert spec.function is sample_ddim and spec.options() == {"eta": 0.5}
    assert resolve(STORED, sampler="ancestral").options() == {"variance": "beta"}


def test_one_call_samplers_take_one_step_whatever_steps_says():
    assert [n for n, e in SAMPLERS.items() if e.one_call] == ["posterior_mean", "student"]
    assert resolve(STORED, sampler="posterior_mean", steps=500).steps == 1
    with pytest.raises(FieldError, match="steps 0: expected 1..1000"):  # a nonsense value is refused all the same
        resolve(STORED, sampler="posterior_mean", steps=0)
    assert resolve(SamplingDefaults("student", 1, timesteps=1000), steps=7).steps == 1


@pytest.mark.parametrize("overrides,message", [
    ({"sampler": "euler"}, "sampler euler: expected one of ['ancestral', 'ddim', 'dpm_solver_pp', 'posterior_mean', 'student']"),
    ({"steps": 0}, "steps 0: expected 1..1000 (diffusion.timesteps)"),
    ({"steps": 1001}, "steps 1001: expected 1..1000"),
    ({"eta": 0.3}, "eta applies to sampler ddim only, not dpm_solver_pp"),
    ({"sampler": "ddim", "eta": 1.5}, "eta 1.5: expected a number in [0, 1]"),
    ({"sampler": "ancestral", "grid": "logsnr"}, "grid applies to sampler ddim or dpm_solver_pp, not ancestral"),
    ({"grid": "cosine"}, "grid cosine: expected one of auto, uniform, logsnr"),
    ({"precision": "fp64"}, "precision fp64: expected one of fp32, bf16, fp16, auto"),
    ({"samples": 0}, "samples 0: expected >= 1"),
    ({"consistency": "repaint"}, "consistency repaint needs sampler ancestral, not dpm_solver_pp"),
])
def test_bad_settings_name_the_field(overrides, message):
    with pytest.raises(FieldError) as e:
        resolve(STORED, **overrides)
    assert message in str(e.value) and e.value.field == message.split()[0]


def test_repaint_runs_on_the_ancestral_chain_only():
    assert resolve(STORED, sampler="ancestral", consistency="repaint", resample=3).resample == 3
    assert [n for n, e in SAMPLERS.items() if e.repaint_ok] == ["ancestral"]


def test_a_command_names_the_field_as_its_flag():
    err = FieldError("sr_factor", 0.5, "expected a factor > 1")
    assert str(err) == "sr_factor 0.5: expected a factor > 1"
    assert isinstance(err.as_flag(), InputError) and str(err.as_flag()) == "--sr-factor 0.5: expected a factor > 1"
    assert str(err.as_flag({"sr_factor": "--factor"})) == "--factor 0.5: expected a factor > 1"


def test_sampler_options_is_the_registry_view():
    assert sampler_options("ddim", "beta", 0.2, "auto") == {"eta": 0.2, "grid": "uniform"}
    assert sampler_options("student", "beta", 0.2) == {}
    with pytest.raises(TypeError, match="unknown settings"):
        resolve(STORED, temperature=2.0)
