"""Provenance sidecars record the sampler settings that ran (the checkpoint's defaults resolved), not None
(issue 29.6)."""

from __future__ import annotations

import json

import pytest

from meddiff.cli import main

from .cli_inputs import small_input


@pytest.mark.parametrize("extra,expected", [
    ([], {"sampler": "posterior_mean", "steps": 1, "precision": "fp32"}),  # sr_x4_general's stored defaults
    (["--sampler", "dpm_solver_pp", "--steps", "2"], {"sampler": "dpm_solver_pp", "steps": 2, "precision": "fp32"}),
])
def test_provenance_records_the_resolved_sampler_settings(tmp_path, extra, expected):
    out = tmp_path / "out"
    assert main(["sample", "--checkpoint", "sr_x4_general", "-i", str(small_input(tmp_path)), "-o", str(out),
                 "--no-progress", "--device", "cpu", *extra]) == 0
    record = json.loads((out / "lowres_restored.json").read_text())
    assert {k: record[k] for k in expected} == expected


def test_provenance_records_the_precision_auto_resolved_to(tmp_path):
    import torch

    from meddiff.diffusion.denoiser import resolve_precision

    out = tmp_path / "out"
    assert main(["sample", "--checkpoint", "sr_x4_general", "-i", str(small_input(tmp_path)), "-o", str(out),
                 "--no-progress", "--device", "cpu", "--precision", "auto"]) == 0
    record = json.loads((out / "lowres_restored.json").read_text())
    assert record["precision"] == resolve_precision("auto", torch.device("cpu")) != "auto"


def test_provenance_of_a_classical_method_names_no_sampler(tmp_path):
    out = tmp_path / "out"
    assert main(["sample", "--method", "bicubic", "-i", str(small_input(tmp_path)), "-o", str(out), "--no-progress"]) == 0
    record = json.loads((out / "lowres_restored.json").read_text())
    assert record["method"] == "bicubic" and record["sampler"] is None and record["steps"] is None
