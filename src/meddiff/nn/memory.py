"""The memory of one U-Net call before running it: an upper estimate of its peak activations (the run's
budget, --max-memory and the process's peak are meddiff.samplers.memory's).

The estimate walks the U-Net's levels as ``UNet.forward`` does, with every tensor counted at
4 bytes per value (float32; bf16 autocast keeps GroupNorm outputs in float32, so halving would
under-count): the skip tensors the decoder will concatenate stay alive, and at each block the
transient peak is its input, the normalised input, the convolution outputs and the residual
branch. Attention adds q, k, v, its output copies and, when PyTorch falls back to its math
kernel, one chunk of the score matrix (and its softmax) bounded by
``nn.unet.ATTENTION_CHUNK_BYTES``: linear in pixels. Calibrated against the peak resident set
of single calls (ALLOCATOR_FACTOR).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from . import unet as unet_mod

F32 = 4


#: Measured peak resident-set growth of one call over the live bytes counted here: 0.74-1.11 on
#: the shipped demo model (128x128 batch 8; 256x256, 512x512 and 1024x1024 batch 1; fp32; 2026-12-03;
#: the allocator keeps some freed blocks, oneDNN and GroupNorm take scratch copies): a margin of 25%.
ALLOCATOR_FACTOR = 1.25

#: The same for 3D networks: 1.15-1.22 measured (configs/volume_3d_thick_x4.yaml's network, one fp32 call
#: at 32x56x88 and 64x56x88, batch 1, one thread; 2026-12-03); a 32x32x32 call took 112 MB for 30 MB
#: counted (a fixed ~80 MB of oneDNN scratch that small windows do not amortise): a margin of 50%.
ALLOCATOR_FACTOR_3D = 1.5


def score_bytes(batch: int, heads: int, pixels: int, efficient: bool) -> int:
    """Score matrix and softmax of one attention chunk when the math kernel runs (0 when a
    flash / memory-efficient kernel does: their scratch is a few query blocks)."""
    if efficient:
        return 0
    chunk = unet_mod.query_chunk(batch, heads, pixels, F32, unet_mod.ATTENTION_CHUNK_BYTES)
    return 2 * batch * heads * chunk * pixels * F32


def _attention_bytes(batch: int, channels: int, pixels: int) -> int:
    """Transient bytes of one Attention block beyond its input: norm, qkv (3C), SDPA output and
    its reshaped copy, projection (C each)."""
    return 7 * batch * channels * pixels * F32


def _block_bytes(batch: int, c_in: int, c_out: int, pixels: int) -> int:
    """Transient bytes of one ResBlock beyond its input: norm1 (c_in), conv1, norm2, conv2, skip (c_out)."""
    return batch * pixels * (c_in + 4 * c_out) * F32


def unet_call_bytes(net: torch.nn.Module, batch: int, spatial: Sequence[int], device: torch.device | str = "cpu") -> int:
    """Upper estimate of the memory one no-grad call of a meddiff ``UNet`` on
    ``[batch, in_channels, *spatial]`` adds at its peak (parameters not included): the live
    activations times ALLOCATOR_FACTOR, plus the attention scores if no efficient kernel runs."""
    live, heads, pixels = unet_live_bytes(net, batch, spatial)
    efficient = unet_mod.efficient_attention_available(torch.device(device))
    factor = ALLOCATOR_FACTOR if len(spatial) == 2 else ALLOCATOR_FACTOR_3D
    return int(factor * live) + (score_bytes(batch, heads, pixels, efficient) if heads else 0)


def network_call_bytes(net: torch.nn.Module | None, batch: int, spatial: Sequence[int],
                       device: torch.device | str = "cpu") -> int | None:
    """unet_call_bytes of a network if it is (or wraps) meddiff's UNet, else None (no estimate): a
    torch.compile'd network is estimated by the module inside, an exported one (meddiff.export) by the
    U-Net it was exported from (its `memory_model`)."""
    net = getattr(net, "_orig_mod", net)
    net = getattr(net, "memory_model", None) or net
    return unet_call_bytes(net, batch, spatial, device) if isinstance(net, unet_mod.UNet) else None


def unet_live_bytes(net: torch.nn.Module, batch: int, spatial: Sequence[int]) -> tuple[int, int, int]:
    """(activation bytes alive at the peak of a no-grad call, heads and tokens of the largest attention)."""
    px = [math.prod(s // 2**i for s in spatial) for i in range(net.levels)]
    io = batch * px[0] * (net.in_channels + net.out_channels) * F32
    skips: list[int] = []  # channels of each stored skip tensor, with its level
    skip_bytes = 0
    peak = 0
    c, level = net.conv_in.out_channels, 0
    skips.append((c, 0))
    skip_bytes += batch * c * px[0] * F32

    attended = [(net.mid_attn.num_heads, px[-1])]

    def attn_of(module, c, lv):
        if not isinstance(module, unet_mod.Attention):
            return 0
        attended.append((module.num_heads, px[lv]))
        return _attention_bytes(batch, c, px[lv])

    for i, lvl in enumerate(net.down):
        for block, attn in zip(lvl.blocks, lvl.attns):
            co = block.conv1.out_channels
            peak = max(peak, skip_bytes + _block_bytes(batch, c, co, px[i]), skip_bytes + attn_of(attn, co, i))
            c = co
            skips.append((c, i))
            skip_bytes += batch * c * px[i] * F32
        if i < net.levels - 1:
            skips.append((c, i + 1))
            skip_bytes += batch * c * px[i + 1] * F32
    mid = max(_block_bytes(batch, c, c, px[-1]), _attention_bytes(batch, c, px[-1]))
    peak = max(peak, skip_bytes + 2 * batch * c * px[-1] * F32 + mid)
    for j, lvl in enumerate(net.up):
        i = net.levels - 1 - j
        for block, attn in zip(lvl.blocks, lvl.attns):
            cs, _ = skips.pop()
            skip_bytes -= batch * cs * px[i] * F32
            co = block.conv1.out_channels
            cat = batch * (c + cs) * px[i] * F32
            peak = max(peak, skip_bytes + 2 * cat + _block_bytes(batch, c + cs, co, px[i]),
                       skip_bytes + batch * co * px[i] * F32 + attn_of(attn, co, i))
            c = co
        if i > 0:  # 2x upsample: phase outputs at low resolution + the interleaved result
            peak = max(peak, skip_bytes + 3 * batch * c * px[i - 1] * F32)
    heads, pixels = max(attended, key=lambda hp: hp[0] * hp[1] ** 2)
    return int(io + peak), heads, pixels


def parameter_bytes(net: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in net.parameters())
