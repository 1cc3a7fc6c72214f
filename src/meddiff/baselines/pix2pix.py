"""pix2pixGAN (Isola et al., "Image-to-image translation with conditional adversarial networks", CVPR 2017).

Objective (paper eq. 4), with the condition y = meddiff's condition planes and x = the target:

    G* = arg min_G max_D  L_cGAN(G, D) + lambda L_L1(G),       lambda = 100
    L_cGAN = E[log D(y, x)] + E[log(1 - D(y, G(y, z)))]         (eq. 1; "bce")
    L_L1   = E || x - G(y, z) ||_1                              (eq. 3)

trained as in the paper: D and G alternate one step each, D's objective is halved, G
maximises log D(y, G(y, z)) (the non-saturating form) and z is dropout (p = 0.5 in the
innermost decoder layers, kept at test time). ``gan_loss: lsgan`` swaps the cross-entropy for
least squares (Mao et al. 2017, as the authors' later code offers); the default is the paper's BCE.

Networks (paper, Appendix 6.1.1):
- generator: a U-Net; encoder C64-C128-C256-C512-C512... (4x4 convolutions, stride 2,
  LeakyReLU 0.2, no normalisation in the first layer), decoder of 4x4 transposed convolutions
  with ReLU, skip connections concatenating encoder layer i to decoder layer n - i, tanh output.
  ``baseline.width`` is the first width (paper 64), ``baseline.depth`` the number of
  down-samplings (paper 8 for 256x256; images must be multiples of 2**depth).
- discriminator: the 70x70 PatchGAN C64-C128-C256-C512 then a 1-channel convolution, on the
  channel concatenation (y, x) (``disc_layers`` = 3 stride-2 layers gives 70x70).

Differences from the paper, said here once: normalisation is InstanceNorm (affine). The paper
uses batch normalisation with test-batch statistics and batch size 1, which is exactly instance
normalisation; InstanceNorm keeps that for any batch size and makes a prediction independent of
the other images in the batch. The innermost encoder layer has no normalisation (its output is
1x1, where a per-instance norm would zero it; the authors' code does the same).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import BaselineConfig, ModelConfig
from ..errors import InputError
from .base import Baseline

Tensor = torch.Tensor
DROPOUT_LAYERS = 3  # the paper's CD layers: dropout in the 3 innermost decoder layers


def adversarial_loss(logits: Tensor, real: bool, kind: str) -> Tensor:
    """GAN loss of discriminator logits against the label real/fake: "bce" is the cross-entropy
    -[t log sigmoid(l) + (1 - t) log(1 - sigmoid(l))] (Goodfellow et al. 2014); "lsgan" is
    (sigmoid-free) (l - t)^2 (Mao et al. 2017); mean over all patches/images."""
    target = torch.full_like(logits, 1.0 if real else 0.0)
    if kind == "lsgan":
        return F.mse_loss(logits, target)
    return F.binary_cross_entropy_with_logits(logits, target)


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor, kind: str) -> Tensor:
    """pix2pix's D objective, halved: (L(D(y, x), 1) + L(D(y, G(y)), 0)) / 2."""
    return 0.5 * (adversarial_loss(real_logits, True, kind) + adversarial_loss(fake_logits, False, kind))


class NoiseDropout(nn.Module):
    """Dropout whose mask can come from a given torch.Generator (pix2pix's noise z at test time).

    Training draws from torch's global RNG (seeded per step by the trainer); ``self.generator``
    (set by `Pix2Pix.predict`) makes test-time draws reproducible per image batch.
    """

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self.active = False  # test time: drop too (set by predict)
        self.generator: torch.Generator | None = None

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0 or not (self.training or self.active):
            return x
        keep = torch.rand(x.shape, generator=self.generator, device="cpu" if self.generator is not None else x.device)
        return x * (keep.to(x.device) >= self.p).to(x.dtype) / (1 - self.p)


class UNetGenerator(nn.Module):
    """pix2pix's U-Net generator (see the module docstring); [B, C_in, H, W] -> [B, 1, H, W] in (-1, 1)."""

    def __init__(self, in_channels: int, width: int, depth: int, dropout: float):
        super().__init__()
        chans = [min(width * 2 ** i, width * 8) for i in range(depth)]  # encoder output widths
        self.down = nn.ModuleList()
        prev = in_channels
        for i, c in enumerate(chans):
            layers: list[nn.Module] = [] if i == 0 else [nn.LeakyReLU(0.2)]
            layers.append(nn.Conv2d(prev, c, 4, 2, 1, bias=i == 0 or i == depth - 1))
            if 0 < i < depth - 1:
                layers.append(nn.InstanceNorm2d(c, affine=True))
            self.down.append(nn.Sequential(*layers))
            prev = c
        self.up = nn.ModuleList()
        for i in reversed(range(depth)):  # decoder layer producing the resolution of encoder layer i - 1
            cin = chans[i] if i == depth - 1 else 2 * chans[i]  # innermost: no skip yet
            if i == 0:
                self.up.append(nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(cin, 1, 4, 2, 1), nn.Tanh()))
                continue
            layers = [nn.ReLU(), nn.ConvTranspose2d(cin, chans[i - 1], 4, 2, 1, bias=False),
                      nn.InstanceNorm2d(chans[i - 1], affine=True)]
            if depth - 1 - i < DROPOUT_LAYERS:
                layers.append(NoiseDropout(dropout))
            self.up.append(nn.Sequential(*layers))

    def forward(self, y: Tensor) -> Tensor:
        skips = []
        h = y
        for layer in self.down:
            h = layer(h)
            skips.append(h)
        h = skips.pop()
        for layer in self.up:
            h = layer(h)
            if skips:
                h = torch.cat([h, skips.pop()], dim=1)
        return h


class PatchGAN(nn.Module):
    """The 70x70 PatchGAN (n_layers stride-2 4x4 layers, one stride-1 layer, a 1-channel output):
    one logit per overlapping patch of the (condition, image) pair."""

    def __init__(self, in_channels: int, width: int, n_layers: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = width
        for i in range(1, n_layers + 1):
            nxt = width * min(2 ** i, 8)
            stride = 2 if i < n_layers else 1
            layers += [nn.Conv2d(c, nxt, 4, stride, 1, bias=False), nn.InstanceNorm2d(nxt, affine=True), nn.LeakyReLU(0.2)]
            c = nxt
        layers.append(nn.Conv2d(c, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, y: Tensor, x: Tensor) -> Tensor:
        return self.net(torch.cat([y, x], dim=1))


def patch_receptive_field(n_layers: int) -> int:
    """Receptive field of a PatchGAN output (all kernels 4; n_layers stride-2 layers then two stride-1): 70 for 3."""
    rf = 1
    for stride in reversed([2] * n_layers + [1, 1]):
        rf = (rf - 1) * stride + 4
    return rf


class Pix2Pix(Baseline):
    """pix2pixGAN as a meddiff baseline (module docstring); built by meddiff.baselines.build_baseline."""

    name = "pix2pix"

    def __init__(self, cfg: BaselineConfig, in_channels: int, model: ModelConfig | None = None):
        super().__init__()
        self.cfg = cfg
        self.gen = UNetGenerator(in_channels, cfg.width, cfg.depth, cfg.dropout)
        self.disc = PatchGAN(in_channels + 1, cfg.disc_width, cfg.disc_layers)
        self.size_multiple = 2 ** cfg.depth
        self.adv_weight = 1.0 if cfg.adv_weight is None else cfg.adv_weight
        self.apply(_init_normal)

    def optimisers(self, lr, betas, weight_decay):
        return {"G": torch.optim.Adam(self.gen.parameters(), lr=lr, betas=betas, weight_decay=weight_decay),
                "D": torch.optim.Adam(self.disc.parameters(), lr=lr, betas=betas, weight_decay=weight_decay)}

    def train_step(self, x0, cond, mask, opts, step):
        low = 3 * 2 ** self.cfg.disc_layers  # the PatchGAN's last normalised layer must stay larger than 1x1
        if min(x0.shape[-2:]) < low:
            raise InputError(f"training images of {tuple(x0.shape[-2:])} pixels: the PatchGAN with baseline.disc_layers "
                             f"{self.cfg.disc_layers} needs at least {low}x{low} (use larger crops or fewer disc_layers)")
        fake = self.gen(cond)
        # D step: real pairs -> 1, generated pairs -> 0 (objective halved)
        d_loss = discriminator_loss(self.disc(cond, x0), self.disc(cond, fake.detach()), self.cfg.gan_loss)
        opts["D"].zero_grad(set_to_none=True)
        d_loss.backward()
        self.clip(self.disc.parameters())
        opts["D"].step()
        # G step: fool D (non-saturating) + lambda * L1
        adv = adversarial_loss(self.disc(cond, fake), True, self.cfg.gan_loss)
        l1 = (fake - x0).abs().mean()
        g_loss = self.adv_weight * adv + self.cfg.lambda_l1 * l1
        opts["G"].zero_grad(set_to_none=True)
        g_loss.backward()
        self.clip(self.gen.parameters())
        opts["G"].step()
        return {"loss": float(g_loss.detach()), "l1": float(l1.detach()), "g_adv": float(adv.detach()), "d": float(d_loss.detach())}

    @torch.no_grad()
    def predict(self, cond, mask, generator=None):
        drops = [m for m in self.gen.modules() if isinstance(m, NoiseDropout)]
        was = self.training
        self.eval()
        try:
            for m in drops:
                m.active, m.generator = True, generator
            return self.gen(cond)
        finally:
            for m in drops:
                m.active, m.generator = False, None
            self.train(was)


def _init_normal(m: nn.Module) -> None:
    """The paper's initialisation: weights N(0, 0.02), norm scales N(1, 0.02), biases 0."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.InstanceNorm2d) and m.affine:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)

