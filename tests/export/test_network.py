"""meddiff export: the exported network equals eager PyTorch, and meddiff's samplers give the same
sample through it (tolerance meddiff.export.TOLERANCE = 1e-4 on the network output; 1e-4 on samples)."""

from __future__ import annotations

import pytest
import torch

from meddiff.cli import main
from meddiff.diffusion.checkpoint import load_pretrained
from meddiff.errors import CheckpointError
from meddiff.export import TOLERANCE, example_inputs, export_denoiser, exported_denoiser, load_exported, read_contract
from meddiff.samplers.run import restore, sampler_options



def _needs(fmt):
    if fmt == "onnx":
        pytest.importorskip("onnx")
        pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def eager():
    torch.set_num_threads(1)
    return load_pretrained("demo_sr_x4")


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_exported_network_equals_eager(tmp_path, eager, fmt):
    _needs(fmt)
    res = export_denoiser("demo_sr_x4", tmp_path / f"m.{'onnx' if fmt == 'onnx' else 'pt'}", fmt)
    assert res.max_abs_diff <= TOLERANCE and res.path.is_file()
    net = load_exported(res.path)
    cfg, denoiser = eager
    for batch, multiples, seed in ((1, 4, 5), (3, 10, 6)):  # other batch sizes and image sizes than the trace's
        x, k = example_inputs(denoiser.net, batch, multiples, seed)
        with torch.no_grad():
            ref = denoiser.net(x, k)
        assert (net(x, k) - ref).abs().max() <= TOLERANCE
        assert ref.abs().max() > 0.01  # a real comparison, not of two zero outputs
    info = read_contract(res.path)
    assert info["task"] == "sr" and info["config"]["diffusion"]["prediction"] == cfg.diffusion.prediction


@pytest.mark.parametrize("fmt,sampler", [("torchscript", "dpm_solver_pp"), ("torchscript", "ancestral"), ("onnx", "ddim")])
def test_sampler_through_export_gives_the_same_sample(tmp_path, eager, fmt, sampler):
    _needs(fmt)
    path = export_denoiser("demo_sr_x4", tmp_path / f"m.{'onnx' if fmt == 'onnx' else 'pt'}", fmt).path
    cfg, denoiser = eager
    cfg2, exported = exported_denoiser(path)
    assert cfg2 == cfg
    g = torch.Generator().manual_seed(0)
    cond = torch.rand(2, 1, 24, 24, generator=g) * 2 - 1  # padded to 24 -> multiple of 4 already
    opts = sampler_options(sampler, cfg.diffusion.variance, 0.0, "auto")
    kw = dict(sampler=sampler, steps=4, samples=1, seed=3, progress=False, **opts)
    a, b = restore(denoiser, cond, **kw), restore(exported, cond, **kw)
    assert a.shape == (1, 2, 1, 24, 24)
    assert (a - b).abs().max() <= 1e-4
    assert (a - cond[None]).abs().max() > 1e-3  # the model did something


def test_export_command_and_refusals(tmp_path, capsys):
    assert main(["export", "--checkpoint", "demo_sr_x4", "-o", str(tmp_path / "m.pt")]) == 0
    assert "tolerance" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary left
    with pytest.raises(CheckpointError, match="seg_mni152_tissue"):
        export_denoiser("seg_mni152_tissue", tmp_path / "s.pt", "torchscript")  # not a DDPM denoiser
    assert main(["export", "--checkpoint", "nosuch", "-o", str(tmp_path / "x.pt")]) == 2
    assert "demo_sr_x4" in capsys.readouterr().err


def test_export_refuses_to_replace_a_file(tmp_path, capsys):
    dest = tmp_path / "m.pt"
    dest.write_bytes(b"not meddiff's")
    assert main(["export", "--checkpoint", "demo_sr_x4", "-o", str(dest)]) == 2
    assert "--overwrite" in capsys.readouterr().err and dest.read_bytes() == b"not meddiff's"
    assert main(["export", "--checkpoint", "demo_sr_x4", "-o", str(dest), "--overwrite"]) == 0
    assert load_exported(dest) is not None


def test_monai_bundle_refuses_an_existing_folder(tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "notes.txt").write_text("mine")
    for extra in ([], ["--overwrite"]):  # not meddiff's folder: refused even with --overwrite
        assert main(["export", "--checkpoint", "demo_sr_x4", "--format", "monai-bundle", "-o", str(bundle), *extra]) == 2
    assert [p.name for p in bundle.iterdir()] == ["notes.txt"] and [p.name for p in tmp_path.iterdir()] == ["bundle"]
    # the bundle itself is checked with MONAI's own tools in tests/export/test_bundle.py
