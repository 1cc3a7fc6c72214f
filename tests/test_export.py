"""meddiff export: the exported network equals eager PyTorch, and meddiff's samplers give the same
sample through it (tolerance meddiff.export.TOLERANCE = 1e-4 on the network output; 1e-4 on samples)."""

from __future__ import annotations

import pytest
import torch

from meddiff.cli import main
from meddiff.errors import CheckpointError
from meddiff.export import TOLERANCE, example_inputs, export_denoiser, exported_denoiser, load_exported, read_contract
from meddiff.inference import restore, sampler_options
from meddiff.models import load_pretrained



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


def test_monai_bundle_layout_and_parse(tmp_path, eager):
    import json

    bundle = tmp_path / "bundle"
    assert main(["export", "--checkpoint", "demo_sr_x4", "--format", "monai-bundle", "-o", str(bundle)]) == 0
    for rel in ("configs/metadata.json", "configs/inference.json", "models/model.ts", "docs/README.md", "LICENSE"):
        assert (bundle / rel).is_file(), rel
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    for key in ("version", "monai_version", "pytorch_version", "numpy_version", "task", "description", "authors",
                "copyright", "network_data_format"):
        assert meta[key], key
    assert meta["network_data_format"]["inputs"]["x"]["num_channels"] == 2
    assert "MNI" in (bundle / "LICENSE").read_text()  # the shipped model's licence travels with it
    monai_bundle = pytest.importorskip("monai.bundle")
    parser = monai_bundle.ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    net, denoiser = parser.get_parsed_content("network"), parser.get_parsed_content("denoiser")
    x, k = example_inputs(eager[1].net, 2, 5, seed=9)
    with torch.no_grad():
        assert (net(x, k) - eager[1].net(x, k)).abs().max() <= TOLERANCE
    assert (denoiser.prediction, denoiser.residual) == (eager[1].prediction, eager[1].residual)
    assert main(["export", "--checkpoint", "demo_sr_x4", "--format", "monai-bundle", "-o", str(bundle)]) == 2  # not without --overwrite
