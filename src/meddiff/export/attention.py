"""Self-attention for exported graphs in bounded memory.

The TorchScript-based ONNX exporter writes PyTorch's scaled_dot_product_attention as
MatMul -> Softmax -> MatMul, so onnxruntime holds the whole [B, heads, N, N] score matrix: at a
512x512 input of sr_x4_general (16,384 tokens at the lowest level, 4 heads) that is 4 GiB per
call, and 64 GiB at 1024x1024. ``fused_attention_copy`` swaps every ``nn.unet.Attention`` of a
(copied) U-Net for ``FusedAttention``: the same parameters and the same arithmetic in PyTorch,
but exported as one ``com.microsoft::MultiHeadAttention`` node, which onnxruntime's CPU and CUDA
providers run with a flash-attention kernel (query and key blocks; scratch of a few blocks, not
N x N). The node is an onnxruntime contrib operator: other ONNX runtimes need the plain graph
(``meddiff export --onnx-attention standard``), whose memory grows with N^2.

Layout: MultiHeadAttention takes query, key and value as [B, N, heads * d] (heads outermost in
the hidden axis), which is the channel order of the U-Net's qkv convolution split in three.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from ..nn.unet import Attention, attention

#: onnxruntime's contrib operator domain and the version of MultiHeadAttention used
ORT_DOMAIN = "com.microsoft"
ORT_DOMAIN_VERSION = 1


class _MultiHeadAttention(torch.autograd.Function):
    """softmax(q k^T / sqrt(d)) v on [B, N, heads * d] inputs; one contrib node when exported to ONNX."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, heads: int) -> Tensor:
        b, n, c = q.shape
        split = [t.reshape(b, -1, heads, c // heads).transpose(1, 2).contiguous() for t in (q, k, v)]
        return attention(*split).transpose(1, 2).reshape(b, n, c)

    @staticmethod
    def symbolic(g, q, k, v, heads: int):
        out = g.op(f"{ORT_DOMAIN}::MultiHeadAttention", q, k, v, num_heads_i=heads)
        out.setType(q.type())
        return out


class FusedAttention(Attention):
    """nn.unet.Attention computed through _MultiHeadAttention (same parameters, same output)."""

    def forward(self, x: Tensor, fast: bool = False) -> Tensor:
        b, c, *spatial = x.shape
        qkv = self.qkv(self.norm(x)).flatten(2).transpose(1, 2)  # [B, N, 3C]: (q | k | v), each (heads, d)
        q, k, v = qkv[..., :c], qkv[..., c:2 * c], qkv[..., 2 * c:]
        h = _MultiHeadAttention.apply(q, k, v, self.num_heads)  # [B, N, C]
        return x + self.proj(h.transpose(1, 2).reshape(b, c, *spatial))


def fused_attention_copy(net: nn.Module) -> nn.Module:
    """A deep copy of `net` whose Attention blocks are FusedAttention (parameters shared by value)."""
    net = copy.deepcopy(net)
    for m in net.modules():
        if type(m) is Attention:
            m.__class__ = FusedAttention
    return net


def count_fused(net: nn.Module) -> int:
    return sum(isinstance(m, FusedAttention) for m in net.modules())
