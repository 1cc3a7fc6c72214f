"""SRGAN (Ledig et al., "Photo-realistic single image super-resolution using a generative
adversarial network", CVPR 2017).

Perceptual loss (paper eq. 3), here with the content term available offline:

    l_SR = l_content + adv_weight * l_Gen,        adv_weight = 1e-3
    l_Gen = sum_n -log D(G(y_n))                   (eq. 6; "bce"; "lsgan" uses least squares)
    l_content = MSE(G(y), x) + perceptual_weight * LPIPS(G(y), x)

The paper's content loss is the MSE of VGG19 feature maps; torchvision's ImageNet VGG weights
cannot be fetched offline, so the content loss here is the pixel MSE (the paper's SRResNet-MSE
loss, eq. 4) plus, optionally (``perceptual_weight`` > 0, default 0), the shift-tolerant LPIPS
AlexNet distance whose weights ship in the ``stlpips-pytorch`` package
(`meddiff.metrics.lpips.load_lpips`); it is loaded only when used and is never saved with the model.
As the paper, the generator may first be trained on the content loss alone (``pretrain_steps``,
SRResNet) before the adversarial game starts; D and G then alternate one step each.

Networks:
- generator: 9x9 conv + PReLU, B residual blocks (3x3 conv, PReLU, 3x3 conv, skip), 3x3 conv
  with a skip over all blocks, 9x9 conv to one channel (``width`` = 64, ``n_blocks`` = B = 16 in
  the paper). Differences: meddiff's SR condition is already interpolated to the target grid,
  so the generator works at the target size and has no pixel-shuffle upsampling blocks (for a
  fair comparison every method sees the same bicubic input), and its output is added to that
  input (a global residual, as VDSR, which also starts from the interpolated image) and clamped
  to [-1, 1]; there is no batch normalisation in the generator (EDSR/ESRGAN found it harmful for
  SR; with CPU-sized batches its statistics are noisy and differ between training and test).
- discriminator: the paper's VGG-style stack of 8 3x3 convolutions (width w, w, 2w, 2w, 4w, 4w,
  8w, 8w; stride 2 on every second), LeakyReLU 0.2 and batch normalisation after all but the
  first, then dense 16w (the paper's 1024 for w = 64), LeakyReLU and dense 1. Difference: a
  global average pool before the dense layers, so any crop size works (the paper flattens
  fixed 96x96 crops).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import BaselineConfig, ModelConfig
from .base import Baseline
from .pix2pix import adversarial_loss, discriminator_loss

Tensor = torch.Tensor
ADV_WEIGHT = 1e-3  # the paper's weight of the adversarial loss


class ResidualBlock(nn.Module):
    """x + conv(PReLU(conv(x))) (the paper's block without its batch normalisation)."""

    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(width, width, 3, 1, 1), nn.PReLU(width), nn.Conv2d(width, width, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class SRGenerator(nn.Module):
    """SRGAN's residual generator at the target size: [B, C, H, W] -> [B, 1, H, W] in [-1, 1]."""

    def __init__(self, in_channels: int, width: int, n_blocks: int):
        super().__init__()
        self.head = nn.Sequential(nn.Conv2d(in_channels, width, 9, 1, 4), nn.PReLU(width))
        self.blocks = nn.Sequential(*[ResidualBlock(width) for _ in range(n_blocks)])
        self.mid = nn.Conv2d(width, width, 3, 1, 1)
        self.tail = nn.Conv2d(width, 1, 9, 1, 4)
        nn.init.zeros_(self.tail.weight)  # an untrained generator returns its (interpolated) input
        nn.init.zeros_(self.tail.bias)

    def forward(self, y: Tensor) -> Tensor:
        h = self.head(y)
        h = h + self.mid(self.blocks(h))
        return (y[:, :1] + self.tail(h)).clamp(-1, 1)


class VGGDiscriminator(nn.Module):
    """SRGAN's discriminator (module docstring): one logit per image."""

    def __init__(self, width: int):
        super().__init__()
        widths = [width, width, 2 * width, 2 * width, 4 * width, 4 * width, 8 * width, 8 * width]
        layers: list[nn.Module] = []
        prev = 1
        for i, c in enumerate(widths):
            layers.append(nn.Conv2d(prev, c, 3, 2 if i % 2 else 1, 1))
            if i > 0:
                layers.append(nn.BatchNorm2d(c))
            layers.append(nn.LeakyReLU(0.2))
            prev = c
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(prev, 16 * width), nn.LeakyReLU(0.2), nn.Linear(16 * width, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


class SRGAN(Baseline):
    """SRGAN as a meddiff baseline (module docstring); built by meddiff.baselines.build_baseline."""

    name = "srgan"

    def __init__(self, cfg: BaselineConfig, in_channels: int, model: ModelConfig | None = None):
        super().__init__()
        self.cfg = cfg
        self.gen = SRGenerator(in_channels, cfg.width, cfg.n_blocks)
        self.disc = VGGDiscriminator(cfg.disc_width)
        self.adv_weight = ADV_WEIGHT if cfg.adv_weight is None else cfg.adv_weight
        self._lpips: list[nn.Module] = []  # a list: not a submodule, so never in the state dict / EMA

    def perceptual(self, a: Tensor, b: Tensor) -> Tensor:
        """Mean shift-tolerant LPIPS (AlexNet) distance; the network is loaded on first use."""
        if not self._lpips:
            from ..metrics.lpips import load_lpips
            self._lpips.append(load_lpips("alex-st").to(a.device))
        net = self._lpips[0]
        return net(a.expand(-1, 3, -1, -1), b.expand(-1, 3, -1, -1)).mean()

    def content_loss(self, sr: Tensor, x0: Tensor) -> Tensor:
        """MSE(G(y), x) + perceptual_weight * LPIPS(G(y), x)."""
        loss = F.mse_loss(sr, x0)
        if self.cfg.perceptual_weight > 0:
            loss = loss + self.cfg.perceptual_weight * self.perceptual(sr, x0)
        return loss

    def optimisers(self, lr, betas, weight_decay):
        return {"G": torch.optim.Adam(self.gen.parameters(), lr=lr, betas=betas, weight_decay=weight_decay),
                "D": torch.optim.Adam(self.disc.parameters(), lr=lr, betas=betas, weight_decay=weight_decay)}

    def train_step(self, x0, cond, mask, opts, step):
        sr = self.gen(cond)
        out: dict[str, float] = {}
        gan = step >= self.cfg.pretrain_steps and self.adv_weight > 0
        if gan:  # D step: real HR -> 1, generated -> 0
            d_loss = discriminator_loss(self.disc(x0), self.disc(sr.detach()), self.cfg.gan_loss)
            opts["D"].zero_grad(set_to_none=True)
            d_loss.backward()
            self.clip(self.disc.parameters())
            opts["D"].step()
            out["d"] = float(d_loss.detach())
        content = self.content_loss(sr, x0)
        g_loss = content
        if gan:
            adv = adversarial_loss(self.disc(sr), True, self.cfg.gan_loss)
            g_loss = content + self.adv_weight * adv
            out["g_adv"] = float(adv.detach())
        opts["G"].zero_grad(set_to_none=True)
        g_loss.backward()
        self.clip(self.gen.parameters())
        opts["G"].step()
        return {"loss": float(g_loss.detach()), "content": float(content.detach()), **out}

    @torch.no_grad()
    def predict(self, cond, mask, generator=None):
        return self.gen(cond)
