"""The two small networks of the downstream tasks (plain PyTorch, no time input).

Why not meddiff.nn.unet: that U-Net is a denoiser. Every residual block takes a time embedding
(here it would be a constant), its output convolutions start at zero, and attention runs at
low resolution; a segmenter needs none of that, and the parameter budget of the shipped file
(< 1.5 MB in float16, i.e. < 750k weights) is better spent on plain convolutions that run fast
on one CPU thread. So :class:`SegUNet` is a plain encoder-decoder U-Net (Ronneberger et al.
2015) with GroupNorm (Wu and He 2018) and SiLU, and :class:`SliceClassifier` a strided
convolutional encoder with global average pooling.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


def conv_block(c_in: int, c_out: int, groups: int = 8) -> nn.Sequential:
    """Two (3x3 conv, GroupNorm, SiLU) layers: [B, c_in, H, W] -> [B, c_out, H, W]."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(min(groups, c_out), c_out), nn.SiLU(),
        nn.Conv2d(c_out, c_out, 3, padding=1), nn.GroupNorm(min(groups, c_out), c_out), nn.SiLU(),
    )


class SegUNet(nn.Module):
    """U-Net: [B, 1, H, W] in [-1, 1] -> class logits [B, n_classes, H, W].

    channels[i] is the width at level i (level 0 = full size); H and W must be multiples of
    2 ** (len(channels) - 1) (128 with the default four levels: 8 x 8 at the bottom... of 64).
    """

    def __init__(self, n_classes: int = 3, channels: Sequence[int] = (16, 32, 64, 128)):
        super().__init__()
        self.channels = tuple(int(c) for c in channels)
        self.size_multiple = 2 ** (len(self.channels) - 1)
        self.down = nn.ModuleList()
        c_prev = 1
        for c in self.channels:
            self.down.append(conv_block(c_prev, c))
            c_prev = c
        self.up = nn.ModuleList()
        self.fuse = nn.ModuleList()
        for c in reversed(self.channels[:-1]):
            self.up.append(nn.ConvTranspose2d(c_prev, c, 2, stride=2))
            self.fuse.append(conv_block(2 * c, c))
            c_prev = c
        self.head = nn.Conv2d(c_prev, n_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for up, fuse, skip in zip(self.up, self.fuse, reversed(skips[:-1])):
            x = fuse(torch.cat([up(x), skip], 1))
        return self.head(x)


class SliceClassifier(nn.Module):
    """Strided conv encoder + global average pooling + linear: [B, 1, H, W] in [-1, 1] -> logits [B, n_classes]."""

    def __init__(self, n_classes: int = 3, channels: Sequence[int] = (16, 32, 64, 64, 64)):
        super().__init__()
        self.channels = tuple(int(c) for c in channels)
        layers: list[nn.Module] = []
        c_prev = 1
        for c in self.channels:
            layers += [nn.Conv2d(c_prev, c, 3, stride=2, padding=1), nn.GroupNorm(min(8, c), c), nn.SiLU(),
                       nn.Conv2d(c, c, 3, padding=1), nn.GroupNorm(min(8, c), c), nn.SiLU()]
            c_prev = c
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_prev, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).mean((2, 3)))
