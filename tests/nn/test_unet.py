"""meddiff.nn.unet: shapes, parameter layout, init, equivariance, fast path == plain path, bf16."""

from __future__ import annotations

import hashlib
import math

import pytest
import torch
import torch.nn.functional as F

from meddiff.nn.unet import Attention, UNet, phase_kernels, upsample2x_conv
from meddiff.nn.unet import query_chunk as unet_query_chunk

PEER = dict(channels=(64, 128, 256), num_res_blocks=2, attention_levels=(False, False, True), norm_groups=32, num_heads=4)
SMALL = dict(channels=(8, 16), num_res_blocks=1, attention_levels=(False, True), norm_groups=4, num_heads=2)


def randomised(net: torch.nn.Module, seed: int = 0, std: float = 0.1) -> torch.nn.Module:
    """Every parameter drawn N(0, std^2) (so zero-initialised layers contribute)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return net


def layout_fingerprint(net: torch.nn.Module) -> str:
    items = [(k, tuple(v.shape)) for k, v in net.state_dict().items()]
    return hashlib.sha256(repr(items).encode()).hexdigest()[:16]


@pytest.mark.parametrize("spatial_dims,shape", [(2, (3, 3, 8, 12)), (3, (2, 3, 4, 8, 4))])
def test_output_shape_2d_3d(spatial_dims, shape):
    net = UNet(3, 2, spatial_dims=spatial_dims, **SMALL)
    y = net(torch.randn(shape), torch.tensor([5] * shape[0]))
    assert y.shape == (shape[0], 2, *shape[2:])
    assert y.is_contiguous()


def test_peer_configuration_parameter_count_and_state_dict_layout():
    net = UNet(2, 1, **PEER)
    assert sum(p.numel() for p in net.parameters()) == 15_723_201
    # keys and shapes as at commit d936b79 (checkpoints trained then must keep loading)
    assert len(net.state_dict()) == 246
    assert layout_fingerprint(net) == "3d6f5d56f4409728"
    assert layout_fingerprint(UNet(2, 1, spatial_dims=3, **PEER)) == "108952f56c245d1e"


def test_output_is_zero_at_init():
    net = UNet(2, 1, **SMALL)
    y = net(torch.randn(2, 2, 8, 8), torch.tensor([1, 900]))
    assert torch.count_nonzero(y) == 0


def test_bad_inputs_named():
    net = UNet(2, 1, **SMALL)
    with pytest.raises(ValueError, match="expects 2 input channels, got 3"):
        net(torch.randn(1, 3, 8, 8), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"spatial size \(8, 7\) must be a multiple of 2"):
        net(torch.randn(1, 2, 8, 7), torch.tensor([0]))


@pytest.mark.parametrize("fast", [False, True])
def test_circular_translation_equivariance_without_padding_effects(fast):
    """Circular padding everywhere makes every layer commute with circular shifts by multiples
    of the total stride; so must the network (GroupNorm and attention are shift-invariant)."""
    torch.manual_seed(0)
    net = randomised(UNet(2, 1, **SMALL)).eval()
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3):
            m.padding_mode = "circular"
    net.fast_path = fast  # fast: channels-last + in-place ops (the phase upsample needs zero padding)
    x, t = torch.randn(1, 2, 8, 8), torch.tensor([77])
    with torch.no_grad():
        y = net(x, t)
        y_shift = net(torch.roll(x, (2, 4), (2, 3)), t)
    torch.testing.assert_close(y_shift, torch.roll(y, (2, 4), (2, 3)), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("fast", [False, True])
def test_attention_commutes_with_spatial_permutation(fast):
    """Self-attention over positions (with per-position 1x1 maps and GroupNorm) is permutation-equivariant."""
    torch.manual_seed(0)
    attn = randomised(Attention(2, 8, 4, 2), std=0.3).eval()
    x = torch.randn(2, 8, 4, 4)
    perm = torch.randperm(16)
    xp = x.flatten(2)[:, :, perm].reshape_as(x)
    with torch.no_grad():
        y, yp = attn(x, fast), attn(xp, fast)
    torch.testing.assert_close(yp, y.flatten(2)[:, :, perm].reshape_as(y), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(y, x)  # it did something


def test_phase_kernel_upsample_equals_interpolate_then_conv():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(5, 3, 3, padding=1).double()
    x = torch.randn(2, 5, 3, 4, dtype=torch.float64)
    ref = conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
    for fmt in (torch.channels_last, torch.contiguous_format):
        out = upsample2x_conv(x.contiguous(memory_format=fmt), conv)
        assert out.shape == ref.shape == (2, 3, 6, 8)
        assert out.is_contiguous(memory_format=fmt)  # the layout is kept
        torch.testing.assert_close(out, ref, atol=1e-12, rtol=1e-12)
    assert phase_kernels(conv.weight).shape == (12, 5, 2, 2)
    # each phase kernel's taps sum to the full kernel's sum (a constant image upsamples to itself)
    sums = phase_kernels(conv.weight).sum((2, 3)).view(4, 3, 5)
    torch.testing.assert_close(sums, conv.weight.sum((2, 3)).expand(4, 3, 5))


@pytest.mark.parametrize("spatial_dims,shape", [(2, (2, 2, 16, 8)), (3, (1, 2, 4, 8, 4))])
def test_fast_path_matches_plain_path_fp32(spatial_dims, shape):
    net = randomised(UNet(2, 1, spatial_dims=spatial_dims, **SMALL), seed=1)
    x, t = torch.randn(shape), torch.arange(shape[0]) * 300
    out, grads = {}, {}
    for fast in (False, True):
        net.fast_path = fast
        net.zero_grad()
        y = net(x, t)
        (y ** 2).mean().backward()
        out[fast] = y.detach()
        grads[fast] = torch.cat([p.grad.flatten() for p in net.parameters()])
        with torch.no_grad():  # the in-place no-grad variant too
            torch.testing.assert_close(net(x, t), out[fast], atol=1e-6, rtol=1e-5)
    assert out[False].abs().mean() > 1e-2
    assert float((out[True] - out[False]).norm() / out[False].norm()) < 1e-5
    assert float((grads[True] - grads[False]).norm() / grads[False].norm()) < 1e-5


def test_fast_path_leaves_input_and_parameters_untouched():
    net = randomised(UNet(2, 1, **SMALL))
    x = torch.randn(1, 2, 8, 8)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x0 = x.clone()
    with torch.no_grad():
        net(x, torch.tensor([3]))
    assert torch.equal(x, x0)
    assert all(torch.equal(before[k], v) and v.is_contiguous() for k, v in net.state_dict().items())


def test_bf16_autocast_relative_error_below_3_percent():
    """One call under bf16 autocast vs fp32 at a fixed seed: bf16 keeps 8 mantissa bits (2^-9 =
    0.2% per rounding); through ~40 layers the measured error is ~1% (benchmarks/unet_speed.py)."""
    net = randomised(UNet(2, 1, **SMALL), seed=2).eval()
    x = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([10, 700])
    with torch.no_grad():
        ref = net(x, t)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = net(x, t).float()
    err = float((low - ref).norm() / ref.norm())
    assert 1e-4 < err < 3e-2  # lower bound: autocast really ran in bf16


def reference_attention(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    """The textbook form: explicit scores, softmax, weighted sum (Vaswani et al. eq. 1), residual."""
    b, c, *spatial = x.shape
    heads, d = attn.num_heads, c // attn.num_heads
    qkv = attn.qkv(attn.norm(x)).reshape(b, 3, heads, d, -1)  # channel = i * C + head * d + j
    q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]  # [B, heads, d, N]
    w = torch.softmax(torch.einsum("bhdn,bhdm->bhnm", q, k) / math.sqrt(d), dim=-1)
    h = torch.einsum("bhnm,bhdm->bhdn", w, v).reshape(b, c, *spatial)
    return x + attn.proj(h)


@pytest.mark.parametrize("spatial_dims,shape", [(2, (6, 10)), (3, (3, 4, 5))])
@pytest.mark.parametrize("budget", [None, 1])
@pytest.mark.parametrize("channels_last", [False, True])
def test_attention_equals_explicit_softmax_chunked_or_not(spatial_dims, shape, budget, channels_last, monkeypatch):
    """SDPA on channel-last views, whole (efficient kernel) or one query per chunk (math kernel,
    budget 1 byte), equals the explicit formula."""
    import meddiff.nn.unet as unet

    if budget is not None:  # the math kernel only: chunking is for it
        monkeypatch.setattr(unet, "ATTENTION_CHUNK_BYTES", budget)
        monkeypatch.setattr(unet, "efficient_attention_available", lambda device: False)
    torch.manual_seed(0)
    attn = randomised(Attention(spatial_dims, 16, 4, 4), std=0.3).double().eval()
    x = torch.randn(2, 16, *shape, dtype=torch.float64)
    if channels_last and spatial_dims == 2:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = reference_attention(attn, x)
        for fast in (False, True):
            torch.testing.assert_close(attn(x.clone(), fast), ref, atol=1e-10, rtol=1e-10)


def test_query_chunk_bounds_the_score_matrix():
    assert unet_query_chunk(1, 4, 65_536, 4, 2**28) == 256  # 1 x 4 x 256 x 65536 x 4 B = 256 MiB
    assert unet_query_chunk(8, 4, 4_096, 4, 2**40) == 4_096  # fits: one call
    assert unet_query_chunk(1, 1, 10, 4, 1) == 1  # never zero


def test_network_is_one_graph_for_torch_compile():
    """No graph break (SDPA's kernel switches are read outside the traced graph): torch.compile
    gets the whole network as one graph instead of one per block, recompiled per level size."""
    net = UNet(2, 1, **SMALL).eval()
    with torch.no_grad():
        explained = torch._dynamo.explain(net)(torch.randn(1, 2, 8, 8), torch.tensor([3]))
    assert explained.graph_break_count == 0 and explained.graph_count == 1
