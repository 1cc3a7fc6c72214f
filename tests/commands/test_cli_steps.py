"""--steps below 1 is refused, naming the flag, by every verb that takes it (issue 29.6)."""

from __future__ import annotations

import pytest

from meddiff.cli import main

from .cli_inputs import small_input


@pytest.mark.parametrize("steps", ["0", "-3"])
@pytest.mark.parametrize("verb", [
    ["sample", "--checkpoint", "demo_sr_x4", "-i", "INPUT"],
    ["sample", "--checkpoint", "sr_x4_general", "-i", "INPUT"],  # a one-call sampler: refused, not ignored
    ["sample", "--checkpoint", "xray_vdm64", "--num", "1"],  # VDM generation
    ["demo"],
    ["demo", "--task", "generate"],
])
def test_steps_below_one_is_refused_naming_the_flag(tmp_path, capsys, verb, steps):
    argv = [str(small_input(tmp_path)) if a == "INPUT" else a for a in verb]
    out = tmp_path / "out"
    assert main([*argv, "-o", str(out), "--steps", steps, "--no-progress", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"error: --steps {steps}: expected" in err and "1" in err.split(f"--steps {steps}: expected")[1]
    assert not out.exists()  # refused before anything was written


def test_demo_denoise_refuses_sampling_flags_it_would_ignore(tmp_path, capsys):
    for flag, value in (("--steps", "0"), ("--steps", "5"), ("--sampler", "ddim")):
        assert main(["demo", "--task", "denoise", "-o", str(tmp_path / "d"), flag, value, "--no-progress"]) == 2
        assert f"{flag} applies to `meddiff demo --task sr`, not --task denoise" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
