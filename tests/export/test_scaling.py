"""The ONNX export at clinical sizes: attention as one fused onnxruntime node (no N x N MatMul),
equal to eager PyTorch at 512x512, and a 1024x1024 output sampled through onnxruntime in windows
as `meddiff sample` plans them. A tiny random network of sr_x4_general's architecture (three
levels, attention at the lowest and in the middle, x0-prediction of the residual; narrower, one
head to keep 16,384 tokens fast; several heads are checked at a small size), every layer random (the zero-initialised output and attention projections too, so attention counts).
Peak memory of the real model: benchmarks/export_memory.py."""

from __future__ import annotations

import pytest
import torch

from meddiff import config as config_mod
from meddiff.checkpointing import save_checkpoint
from meddiff.export import TOLERANCE, export_denoiser, exported_denoiser, load_exported
from meddiff.export.attention import FusedAttention, fused_attention_copy
from meddiff.samplers.run import restore
from meddiff.nn.unet import build_unet

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def tiny_general(root):
    cfg = config_mod.from_dict({
        "task": {"kind": "sr", "sr_factor": 4.0},
        "model": {"channels": [4, 8, 16], "attention_levels": [False, False, True], "norm_groups": 4,
                  "num_res_blocks": 1, "num_heads": 1},  # one head: PyTorch's CPU flash kernel costs per head
        "diffusion": {"timesteps": 50, "prediction": "x0", "residual": True},
        "sampler": {"name": "posterior_mean", "steps": 1},
    })
    torch.manual_seed(0)
    net = build_unet(cfg.model, 2, 1)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "conv_out" in name or "proj" in name:
                p.normal_(0, 0.2)
    return save_checkpoint(root, 1, cfg, net, net, torch.optim.Adam(net.parameters()), in_channels=2), net.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("general")
    ckpt, net = tiny_general(root / "ck")
    return export_denoiser(ckpt, root / "m.onnx", "onnx"), net


def test_fused_attention_equals_attention():
    torch.manual_seed(1)
    net = build_unet(config_mod.from_dict({"model": {"channels": [8, 16], "attention_levels": [False, True],
                                                     "norm_groups": 4, "num_heads": 2}}).model, 2, 1).eval()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "conv_out" in name or "proj" in name:
                p.normal_(0, 0.3)
    fused = fused_attention_copy(net)
    assert sum(isinstance(m, FusedAttention) for m in fused.modules()) == 6  # 2 down, middle, 3 up
    x, k = torch.randn(2, 2, 24, 32), torch.tensor([3, 7])
    with torch.no_grad():
        a, b = net(x, k), fused(x, k)
    assert (a - b).abs().max() < 1e-5 and a.abs().max() > 0.01


def test_several_heads_through_onnxruntime(tmp_path):
    """The fused node splits the hidden axis into heads as the U-Net does (4 heads of 4 channels)."""
    cfg = config_mod.from_dict({"model": {"channels": [8, 16], "attention_levels": [False, True], "norm_groups": 4,
                                          "num_heads": 4}, "diffusion": {"timesteps": 50}})
    torch.manual_seed(4)
    net = build_unet(cfg.model, 2, 1)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "conv_out" in name or "proj" in name:
                p.normal_(0, 0.3)
    ckpt = save_checkpoint(tmp_path / "ck", 1, cfg, net, net, torch.optim.Adam(net.parameters()), in_channels=2)
    res = export_denoiser(ckpt, tmp_path / "m.onnx", "onnx")
    x, k = torch.randn(3, 2, 40, 56), torch.tensor([1, 20, 49])
    with torch.no_grad():
        ref = net.eval()(x, k)
    assert (load_exported(res.path)(x, k) - ref).abs().max() <= TOLERANCE and ref.abs().max() > 0.01


def test_graph_has_one_fused_node_per_attention_and_no_score_matmul(exported):
    import onnx

    res, net = exported
    ops = [n.op_type for n in onnx.load(str(res.path)).graph.node]
    assert ops.count("MultiHeadAttention") == 4  # down, middle, two up blocks at the lowest level
    assert "MatMul" not in ops and "Softmax" not in ops


def test_512_call_through_onnxruntime_equals_eager(exported):
    res, net = exported
    g = torch.Generator().manual_seed(2)
    x, k = torch.randn(1, 2, 512, 512, generator=g), torch.tensor([17])
    with torch.no_grad():
        ref = net(x, k)
    out = load_exported(res.path)(x, k)
    assert out.shape == (1, 1, 512, 512)
    assert (out - ref).abs().max() <= 10 * TOLERANCE * ref.abs().max() and ref.abs().max() > 0.01  # sums over 16,384 keys


def test_1024_output_sampled_through_onnxruntime_in_windows(exported, caplog):
    from meddiff.nn.memory import unet_call_bytes

    res, net = exported
    cfg, den = exported_denoiser(res.path)
    # the planner sees the exported network's U-Net: same estimate, so the same batches and windows as eager
    assert unet_call_bytes(den.net.memory_model, 1, (1024, 1024)) == unet_call_bytes(net, 1, (1024, 1024))
    cond = torch.rand(1, 1, 1024, 1024, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with caplog.at_level("INFO", logger="meddiff"):
        out = restore(den, cond, sampler="posterior_mean", steps=1, progress=False, tile_size=256)
    assert out.shape == (1, 1, 1, 1024, 1024) and torch.isfinite(out).all()
    assert "256x256 windows of 1024x1024" in caplog.text
    # window by window the network is the one checked at 512x512 above; blending is meddiff.samplers.tiling's (tests/samplers/test_tiling.py)
    assert (out[0, 0] - cond).abs().max() > 1e-3  # the network did something
