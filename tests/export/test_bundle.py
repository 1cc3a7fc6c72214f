"""meddiff export --format monai-bundle, checked with MONAI's own tools (monai.bundle: verify_metadata
against the schema shipped in the bundle, verify_net_in_out, ckpt_export, ConfigParser, run)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from meddiff.cli import main
from meddiff.diffusion.checkpoint import load_pretrained

bundle_api = pytest.importorskip("monai.bundle")
pytest.importorskip("jsonschema")

MODEL = "sr_x4_general"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "bundle"
    assert main(["export", "--checkpoint", MODEL, "--format", "monai-bundle", "-o", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def eager():
    return load_pretrained(MODEL)[1].net


def _files(bundle: Path):
    return bundle / "configs" / "metadata.json", bundle / "configs" / "inference.json"


def test_layout_licence_and_no_absolute_paths(bundle):
    import meddiff

    for rel in ("configs/metadata.json", "configs/metadata_schema.json", "configs/inference.json", "models/model.pt",
                "models/model.safetensors", "models/denoiser.ts", "docs/README.md", "LICENSE", "docs/license.txt"):
        assert (bundle / rel).is_file(), rel
    assert "Louis Collins" in (bundle / "LICENSE").read_text()  # the notice itself, not a pointer to a missing file
    machine = [str(bundle.parent), str(Path(meddiff.__file__).parents[2]), str(Path.home())]
    for f in bundle.rglob("*"):
        if f.suffix in (".json", ".md", ".txt") or f.name == "LICENSE":
            text = f.read_text()
            assert not any(m in text for m in machine), f


def test_verify_metadata_with_the_shipped_schema(bundle, tmp_path):
    meta, _ = _files(bundle)
    assert json.loads(meta.read_text())["schema"] == "metadata_schema.json"
    bundle_api.verify_metadata(meta_file=str(meta), filepath=str(bundle / "configs" / "metadata_schema.json"))
    broken = json.loads(meta.read_text())
    del broken["network_data_format"]["inputs"]["image"]["dtype"]
    (tmp_path / "m.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="dtype"):  # the schema checks something
        bundle_api.verify_metadata(meta_file=str(tmp_path / "m.json"), filepath=str(bundle / "configs" / "metadata_schema.json"))


def test_network_def_builds_anywhere_and_verify_net_in_out(bundle, tmp_path, monkeypatch, eager):
    meta, infer = _files(bundle)
    monkeypatch.chdir(tmp_path)  # not the bundle: network_def needs no path, bundle_root is not overridden
    parser = bundle_api.ConfigParser()
    parser.read_config(str(infer))
    net = parser.get_parsed_content("network_def")
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in eager.parameters())
    bundle_api.verify_net_in_out(net_id="network_def", meta_file=str(meta), config_file=str(infer), device="cpu", n=4)
    monkeypatch.chdir(bundle)  # bundle_root "." = the bundle folder: the weights of models/model.pt
    parser = bundle_api.ConfigParser()
    parser.read_config("configs/inference.json")
    net = parser.get_parsed_content("network")
    x, k = torch.randn(2, 2, 32, 32), torch.tensor([0, 1999])
    with torch.no_grad():
        assert torch.equal(net(x, k), eager(x, k))
        assert torch.equal(net(x), eager(x, torch.tensor([1999, 1999])))  # default: the noisiest step


def test_ckpt_export_from_model_pt(bundle, tmp_path, monkeypatch, eager):
    monkeypatch.chdir(bundle)
    ts = tmp_path / "model.ts"
    bundle_api.ckpt_export(net_id="network_def", filepath=str(ts), meta_file="configs/metadata.json",
                           config_file="configs/inference.json", use_trace=True, input_shape=[1, 2, 32, 32])
    net, meta, _ = __import__("monai").data.load_net_with_metadata(str(ts))
    assert meta["name"] == MODEL
    x = torch.randn(1, 2, 48, 48)
    with torch.no_grad():
        assert (net(x) - eager(x, torch.tensor([1999]))).abs().max() < 1e-4


def test_bundle_run_restores_a_folder(bundle, tmp_path, monkeypatch):
    from PIL import Image

    inputs = tmp_path / "in"
    inputs.mkdir()
    yy, xx = np.mgrid[:24, :32]
    Image.fromarray((127 + 100 * np.sin(xx / 3.0) * np.cos(yy / 4.0)).astype(np.uint8)).save(inputs / "a.png")
    monkeypatch.chdir(bundle)
    bundle_api.run(config_file="configs/inference.json", meta_file="configs/metadata.json",
                   input_dir=str(inputs), output_dir=str(tmp_path / "out"))
    outs = sorted(p.name for p in (tmp_path / "out").rglob("*.png"))
    assert len(outs) == 1
    assert Image.open(next((tmp_path / "out").rglob("*.png"))).size == (128, 96)  # x4
    sidecar = json.loads(next((tmp_path / "out").rglob("*.json")).read_text()) if list((tmp_path / "out").rglob("*.json")) else {}
    assert "posterior_mean" in json.dumps(sidecar)  # the checkpoint's stored sampler ran
