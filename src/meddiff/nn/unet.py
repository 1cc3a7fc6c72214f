"""U-Net for diffusion (Ho et al. 2020 / Med-cDiff): GroupNorm, sinusoidal time embedding,
residual blocks, self-attention at chosen (low) resolutions; 2D or 3D from one definition.

The condition (and for inpainting the mask) enters by channel concatenation with x_t, so the
network only sees ``in_channels`` input planes; it knows nothing about tasks or schedules.

Shapes: input ``[B, C_in, *spatial]`` with each spatial size divisible by
``2 ** (len(channels) - 1)``; output ``[B, C_out, *spatial]``; ``t`` is ``[B]`` (float or int
diffusion time in the units the schedule uses).

Fast path (``UNet.fast_path``, on by default; CPU tensors only, parameters untouched): 2D
activations in channels-last memory under no_grad (oneDNN convolutions skip their NCHW
reorders; for training channels-last measured slower, so it is not used there), the 2x
nearest upsample + 3x3 convolution computed as one 2x2 convolution on the low-resolution input
with four phase kernels (2.25x fewer multiply-adds, exact up to float rounding), residual and
time-embedding additions in place on fresh convolution outputs, SiLU in place without autograd.
Measured in benchmarks/unet_speed.py; ``fast_path=False`` is the plain reference path.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ModelConfig


def conv_nd(spatial_dims: int, *args, **kwargs) -> nn.Module:
    return (nn.Conv2d if spatial_dims == 2 else nn.Conv3d)(*args, **kwargs)


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal embedding (Vaswani et al. 2017, as in Ho et al. 2020): [B] -> [B, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def phase_kernels(weight: Tensor) -> Tensor:
    """3x3 kernels [O, I, 3, 3] -> 2x2 phase kernels [4*O, I, 2, 2] (phase order (a, b) = 00, 01, 10, 11).

    conv3x3(upsample_nearest_2x(x))[2i+a, 2j+b] = conv2x2(pad(x, 1), phase (a, b))[i+a, j+b]:
    along each axis, output phase 0 sees input rows (i-1, i) with taps (w0, w1+w2) and phase 1
    sees (i, i+1) with taps (w0+w1, w2).
    """
    def fold(w: Tensor, dim: int) -> tuple[Tensor, Tensor]:
        w0, w1, w2 = w.unbind(dim)
        return torch.stack([w0, w1 + w2], dim), torch.stack([w0 + w1, w2], dim)

    rows = fold(weight, 2)
    phases = [k for r in rows for k in fold(r, 3)]
    return torch.cat(phases, 0)


def upsample2x_conv(x: Tensor, conv: nn.Conv2d) -> Tensor:
    """conv(F.interpolate(x, scale_factor=2, mode="nearest")) for a 3x3, padding-1 Conv2d.

    x: [B, C, H, W] -> [B, O, 2H, 2W], in x's memory layout (channels-last or contiguous).
    """
    b, _, hgt, wid = x.shape
    o = conv.out_channels
    bias = conv.bias.repeat(4) if conv.bias is not None else None
    y = F.conv2d(F.pad(x, (1, 1, 1, 1)), phase_kernels(conv.weight), bias)  # [B, 4O, H+1, W+1]
    if x.is_contiguous(memory_format=torch.channels_last):
        y = y.permute(0, 2, 3, 1).reshape(b, hgt + 1, wid + 1, 2, 2, o)  # a view: y is channels-last
        rows = [torch.stack([y[:, a:a + hgt, c:c + wid, a, c] for c in (0, 1)], 3) for a in (0, 1)]  # [B, H, W, 2, O]
        return torch.stack(rows, 2).reshape(b, 2 * hgt, 2 * wid, o).permute(0, 3, 1, 2)
    y = y.reshape(b, 2, 2, o, hgt + 1, wid + 1)
    rows = [torch.stack([y[:, a, c, :, a:a + hgt, c:c + wid] for c in (0, 1)], -1) for a in (0, 1)]  # [B, O, H, W, 2]
    return torch.stack(rows, 3).reshape(b, o, 2 * hgt, 2 * wid)


def silu(x: Tensor, fast: bool) -> Tensor:
    """SiLU, in place on the fast path when no graph is recorded (x is a fresh GroupNorm output)."""
    return F.silu(x, inplace=fast and not torch.is_grad_enabled())


def zero_init(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """GroupNorm-SiLU-Conv, + time embedding, GroupNorm-SiLU-Dropout-Conv (zero-initialised), + skip."""

    def __init__(self, spatial_dims: int, c_in: int, c_out: int, emb_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = conv_nd(spatial_dims, c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_init(conv_nd(spatial_dims, c_out, c_out, 3, padding=1))
        self.skip = conv_nd(spatial_dims, c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor, fast: bool = False) -> Tensor:
        h = self.conv1(silu(self.norm1(x), fast))
        e = self.emb(emb).view(*emb.shape[:1], -1, *([1] * (x.ndim - 2)))
        h = h.add_(e) if fast else h + e  # conv outputs are not saved for backward: in place is safe
        h = self.conv2(self.dropout(silu(self.norm2(h), fast)))
        return h.add_(self.skip(x)) if fast else self.skip(x) + h


#: Largest attention-score matrix (bytes, all heads and images of a call) one SDPA call may need
#: when PyTorch's flash / memory-efficient kernels are switched off (the math kernel holds the
#: whole matrix): above it the queries are split into chunks, so memory grows linearly with
#: pixels whichever kernel runs. Estimated in meddiff.nn.memory.
ATTENTION_CHUNK_BYTES = 256 * 2**20


def efficient_attention_available(device: torch.device) -> bool:
    """Whether SDPA may use a flash / memory-efficient kernel on `device` (PyTorch's switches;
    the CPU flash kernel obeys the flash switch). Hardware limits on old GPUs are not probed:
    there the estimate in meddiff.nn.memory under-counts at most one score chunk."""
    b = torch.backends.cuda
    return b.flash_sdp_enabled() or (device.type == "cuda" and b.mem_efficient_sdp_enabled())


def query_chunk(batch: int, heads: int, tokens: int, itemsize: int, budget: int = ATTENTION_CHUNK_BYTES) -> int:
    """Queries per SDPA call so that batch * heads * chunk * tokens * itemsize <= budget (>= 1; all if it fits)."""
    per_query = batch * heads * tokens * itemsize
    return max(1, min(tokens, budget // max(per_query, 1)))


def attention(q: Tensor, k: Tensor, v: Tensor, budget: int | None = None) -> Tensor:
    """softmax(q k^T / sqrt(d)) v over [B, heads, N, d] (Vaswani et al. 2017, eq. 1) by PyTorch SDPA.

    q, k, v need a contiguous last dimension: the flash and memory-efficient kernels (CPU and
    CUDA) refuse strided ones and fall back to the quadratic math kernel (measured: 16,384
    tokens, 4 heads, 1 thread: 1.2 s and no extra memory with the flash kernel, 33 s and 9.5 GB
    with the math kernel). Where no efficient kernel is enabled, the queries go in chunks whose
    score matrix stays under `budget` bytes (default ATTENTION_CHUNK_BYTES, read at call time;
    exact: rows of the softmax are independent). Efficient kernels are never chunked: the CPU
    flash kernel in bf16 takes a [queries, tokens] scratch per call that the allocator kept,
    4.3 GB over 256 chunks at 65,536 tokens. Under torch.compile SDPA is called directly: reading
    the kernel switches is a graph break that split the network into one graph per block.
    """
    if torch.compiler.is_compiling() or efficient_attention_available(q.device):
        return F.scaled_dot_product_attention(q, k, v)
    b, heads, n, _ = q.shape
    budget = ATTENTION_CHUNK_BYTES if budget is None else budget
    chunk = query_chunk(b, heads, k.shape[2], max(q.element_size(), 4), budget)
    if chunk >= n:
        return F.scaled_dot_product_attention(q, k, v)
    out = q.new_empty(b, heads, n, v.shape[-1])
    for i in range(0, n, chunk):
        out[:, :, i:i + chunk] = F.scaled_dot_product_attention(q[:, :, i:i + chunk], k, v)
    return out


class Attention(nn.Module):
    """Multi-head self-attention over all spatial positions (PyTorch SDPA, chunked queries), residual."""

    def __init__(self, spatial_dims: int, channels: int, groups: int, num_heads: int):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"attention channels {channels} not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = conv_nd(spatial_dims, channels, 3 * channels, 1)
        self.proj = zero_init(conv_nd(spatial_dims, channels, channels, 1))

    def forward(self, x: Tensor, fast: bool = False) -> Tensor:
        b, c, *spatial = x.shape
        d = c // self.num_heads
        # [B, 3C, *S] -> [B, N, 3, heads, d] -> [3, B, heads, N, d]: the channel axis last, so a
        # channels-last qkv output is used without a copy and every head's d channels are contiguous
        last = 1 + len(spatial)  # positive axis numbers: ONNX export rejects a Transpose perm with -1
        qkv = self.qkv(self.norm(x)).movedim(1, last).reshape(b, -1, 3, self.num_heads, d).permute(2, 0, 3, 1, 4)
        if qkv.stride(-1) != 1:  # 3D (no channels-last conv output): SDPA's flash kernel needs contiguous heads
            qkv = qkv.contiguous()
        h = attention(qkv[0], qkv[1], qkv[2])  # [B, heads, N, d]
        h = h.transpose(1, 2).reshape(b, *spatial, c).movedim(last, 1)  # channels-last layout in 2D
        return self.proj(h).add_(x) if fast else x + self.proj(h)


class Level(nn.Module):
    """Residual blocks (each optionally followed by attention) at one resolution."""

    def __init__(self, blocks: Sequence[ResBlock], attns: Sequence[nn.Module]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attns = nn.ModuleList(attns)


class UNet(nn.Module):
    """eps/x0/v-prediction U-Net.

    channels[i] is the width at resolution level i (level 0 = full size); each level has
    ``num_res_blocks`` residual blocks in the encoder and ``num_res_blocks + 1`` in the decoder
    (as Ho et al. / diffusers), attention after each block where ``attention_levels[i]``, and a
    middle Res-Attn-Res block at the lowest resolution.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int] = (64, 128, 256),
        num_res_blocks: int = 2,
        attention_levels: Sequence[bool] = (False, False, True),
        norm_groups: int = 32,
        num_heads: int = 4,
        dropout: float = 0.0,
        spatial_dims: int = 2,
        fast_path: bool = True,
        cond_dim: int = 0,
    ):
        super().__init__()
        self.fast_path = fast_path
        if len(attention_levels) != len(channels):
            raise ValueError(f"attention_levels {attention_levels} must have one entry per level in {channels}")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.levels = len(channels)
        c0 = channels[0]
        emb_dim = 4 * c0
        self.time_dim = c0
        self.time_mlp = nn.Sequential(nn.Linear(c0, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        # a conditioning vector (a class embedding) added to the time embedding; zero at the start, so a
        # conditional model initialised from an unconditional one starts as exactly that model
        self.cond_dim = cond_dim
        self.cond_proj = zero_init(nn.Linear(cond_dim, emb_dim)) if cond_dim > 0 else None
        self.conv_in = conv_nd(spatial_dims, in_channels, c0, 3, padding=1)

        def res(ci: int, co: int) -> ResBlock:
            return ResBlock(spatial_dims, ci, co, emb_dim, norm_groups, dropout)

        def attn(c: int, on: bool) -> nn.Module:
            return Attention(spatial_dims, c, norm_groups, num_heads) if on else nn.Identity()

        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips = self._build_encoder(channels, num_res_blocks, attention_levels, res, attn)
        c = skips[-1]
        self.mid1 = res(c, c)
        self.mid_attn = Attention(spatial_dims, c, norm_groups, num_heads)
        self.mid2 = res(c, c)

        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        c = self._build_decoder(channels, num_res_blocks, attention_levels, res, attn, skips)
        self.norm_out = nn.GroupNorm(norm_groups, c)
        self.conv_out = zero_init(conv_nd(spatial_dims, c, out_channels, 3, padding=1))

    def _build_encoder(self, channels: Sequence[int], num_res_blocks: int, attention_levels: Sequence[bool],
                       res: Callable[[int, int], nn.Module], attn: Callable[[int, bool], nn.Module]) -> list[int]:
        """Fill self.down (the blocks of each level) and self.downsample (stride-2 convs between levels), in
        the order their weights are drawn; returns the widths of the skip connections (the last: the bottom's)."""
        skips = [channels[0]]
        c = channels[0]
        for i, co in enumerate(channels):
            blocks, attns = [], []
            for _ in range(num_res_blocks):
                blocks.append(res(c, co))
                attns.append(attn(co, attention_levels[i]))
                c = co
                skips.append(c)
            self.down.append(Level(blocks, attns))
            if i < self.levels - 1:
                self.downsample.append(conv_nd(self.spatial_dims, c, c, 3, stride=2, padding=1))
                skips.append(c)
        return skips

    def _build_decoder(self, channels: Sequence[int], num_res_blocks: int, attention_levels: Sequence[bool],
                       res: Callable[[int, int], nn.Module], attn: Callable[[int, bool], nn.Module],
                       skips: list[int]) -> int:
        """Fill self.up (num_res_blocks + 1 blocks per level, each taking a skip from `skips`, which it empties)
        and self.upsample (the convs after each nearest upsampling); returns the output width."""
        c = skips[-1]
        for i, co in reversed(list(enumerate(channels))):
            blocks, attns = [], []
            for _ in range(num_res_blocks + 1):
                blocks.append(res(c + skips.pop(), co))
                attns.append(attn(co, attention_levels[i]))
                c = co
            self.up.append(Level(blocks, attns))
            if i > 0:
                self.upsample.append(conv_nd(self.spatial_dims, c, c, 3, padding=1))
        return c

    @property
    def size_multiple(self) -> int:
        """Every spatial size of the input must be a multiple of this."""
        return 2 ** (self.levels - 1)

    def forward(self, x: Tensor, t: Tensor, c: Tensor | None = None) -> Tensor:
        """x: [B, in_channels, *spatial]; t: [B]; c: [B, cond_dim] (a model built with cond_dim > 0 only)
        -> [B, out_channels, *spatial]."""
        if (c is None) != (self.cond_proj is None):
            raise ValueError(f"UNet built with cond_dim {self.cond_dim} called with "
                             f"{'no conditioning vector' if c is None else 'a conditioning vector'}")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"UNet expects {self.in_channels} input channels, got {x.shape[1]} (shape {tuple(x.shape)})")
        m = self.size_multiple
        if any(s % m for s in x.shape[2:]):
            raise ValueError(f"UNet input spatial size {tuple(x.shape[2:])} must be a multiple of {m}")
        fast = self.fast_path and x.device.type == "cpu"
        if fast and x.ndim == 4 and not torch.is_grad_enabled():
            # channels-last: measured faster for 2D calls without autograd, slower for training
            # (oneDNN backward), no faster in 3D; elsewhere the input's layout is kept
            x = x.contiguous(memory_format=torch.channels_last)
        emb = self.time_mlp(timestep_embedding(t, self.time_dim).to(x.dtype))
        if self.cond_proj is not None:
            emb = emb + self.cond_proj(c.to(emb.dtype))
        h = self.conv_in(x)
        hs = [h]
        for i, level in enumerate(self.down):
            for block, attn in zip(level.blocks, level.attns):
                h = self._attn(attn, block(h, emb, fast), fast)
                hs.append(h)
            if i < self.levels - 1:
                h = self.downsample[i](h)
                hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb, fast), fast), emb, fast)
        for j, level in enumerate(self.up):
            for block, attn in zip(level.blocks, level.attns):
                h = self._attn(attn, block(torch.cat([h, hs.pop()], dim=1), emb, fast), fast)
            if j < self.levels - 1:
                if fast and self.spatial_dims == 2 and self.upsample[j].padding_mode == "zeros":
                    h = upsample2x_conv(h, self.upsample[j])
                else:
                    h = self.upsample[j](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        out = self.conv_out(silu(self.norm_out(h), fast))
        return out.contiguous()

    @staticmethod
    def _attn(attn: nn.Module, h: Tensor, fast: bool) -> Tensor:
        return attn(h, fast) if isinstance(attn, Attention) else h


def build_unet(cfg: ModelConfig, in_channels: int, out_channels: int = 1, cond_dim: int = 0) -> UNet:
    """The U-Net described by a ModelConfig (cond_dim: width of a conditioning vector, 0 = none)."""
    return UNet(
        in_channels=in_channels,
        out_channels=out_channels,
        channels=cfg.channels,
        num_res_blocks=cfg.num_res_blocks,
        attention_levels=cfg.attention_levels,
        norm_groups=cfg.norm_groups,
        num_heads=cfg.num_heads,
        dropout=cfg.dropout,
        spatial_dims=cfg.spatial_dims,
        cond_dim=cond_dim,
    )
