"""Hierarchical Probabilistic U-Net (Kohl et al. 2019, "A Hierarchical Probabilistic U-Net for
Modeling Multi-Scale Ambiguities"), the inpainting baseline "HPUNet" of Med-cDiff (Hung et al.
2023, Table 3; as used by Hung et al. 2021 for ultrasound inpainting).

Model. A U-Net whose decoder carries Gaussian latents z_1..z_L (``latent_scales``, from the
coarsest resolution up), each with ``latent_channels`` channels per pixel:

    prior      p(z_l | z_<l, y)     = N(mu_l^p, sigma_l^p)  computed by the prior net from y
    posterior  q(z_l | z_<l, y, x0) = N(mu_l^q, sigma_l^q)  computed by a posterior net from cat(y, x0)

Each latent is concatenated to the decoder features of its scale before decoding continues, in
both nets. The image is decoded by the prior net; during training its latents are the posterior
samples (so the prior parameters at scale l are computed given the posterior z_<l, as in the
paper), at prediction they are drawn from the prior with the caller's generator.

Loss (the negative ELBO per pixel, paper eq. 4 with the Gaussian reconstruction of images):

    L = [ sum_pixels (mask * rec(x_hat, x0))  +  beta * sum_l KL(q_l || p_l) ] / (B * H * W)

rec is a Gaussian NLL with fixed std ``recon_scale`` (default 0.1 in [-1, 1] units, constants
dropped): (x_hat - x0)^2 / (2 s^2), i.e. MSE: for images (not the binary masks the paper
segmented) the natural decoder is a Gaussian, and with the NLL scaled this way beta = 1 is the true
ELBO, so the KL weight keeps its meaning. ``recon = "l1"`` gives the Laplace NLL |x_hat - x0| / s.
Inpainting (2-channel condition): only hole pixels enter rec, since outside the holes the known
pixels are copied back into every prediction (so all samples agree there exactly). GECO is not
implemented (beta is fixed).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from .base import Baseline
from .upgan import ConvBlock, _get, check_inputs, encode_levels

LOG_SIGMA_RANGE = (-7.0, 3.0)  # clamp of the latent log-std (stability)


def gaussian_kl(mu_q: Tensor, log_sigma_q: Tensor, mu_p: Tensor, log_sigma_p: Tensor) -> Tensor:
    """Elementwise KL(N(mu_q, sigma_q^2) || N(mu_p, sigma_p^2)) of two diagonal Gaussians (closed form):

        log(sigma_p / sigma_q) + (sigma_q^2 + (mu_q - mu_p)^2) / (2 sigma_p^2) - 1/2
    """
    var_ratio = torch.exp(2.0 * (log_sigma_q - log_sigma_p))
    return (log_sigma_p - log_sigma_q) + 0.5 * (var_ratio + (mu_q - mu_p).pow(2) * torch.exp(-2.0 * log_sigma_p)) - 0.5


def gaussian_sample(mu: Tensor, log_sigma: Tensor, eps: Tensor) -> Tensor:
    """Reparameterised sample z = mu + sigma * eps, eps ~ N(0, I) (Kingma & Welling 2014)."""
    return mu + torch.exp(log_sigma) * eps


def reconstruction_nll(pred: Tensor, target: Tensor, kind: str, scale: float) -> Tensor:
    """Per-pixel reconstruction NLL without constants: Gaussian (x - x0)^2 / (2 s^2) ("mse") or
    Laplace |x - x0| / s ("l1")."""
    if kind == "mse":
        return (pred - target).pow(2) / (2.0 * scale**2)
    return (pred - target).abs() / scale


Draw = Callable[[int, Tensor, Tensor], Tensor]  # (scale index, mu, log_sigma) -> z


class HierarchicalUNet(nn.Module):
    """U-Net encoder (``channels[i]`` at H / 2^i) and a decoder with a latent at each of the
    ``latent_scales`` coarsest decoder levels.

    ``forward(x, draw)`` walks the decoder from the coarsest level; at latent level l it computes
    (mu_l, log_sigma_l) by a 1x1 conv of the features, gets z_l = draw(l, mu_l, log_sigma_l) and
    continues with a ConvBlock of cat(features, z_l). With ``out_channels = 0`` (posterior net) the
    decoder stops after the last latent; otherwise a 1x1 conv gives the output at full resolution.
    """

    def __init__(self, in_channels: int, channels: Sequence[int], latent_scales: int, latent_channels: int,
                 groups: int, out_channels: int):
        super().__init__()
        ch = list(channels)
        self.latent_scales, self.latent_channels = latent_scales, latent_channels
        self.enc = nn.ModuleList()
        c = in_channels
        for w in ch:
            self.enc.append(ConvBlock(c, w, groups))
            c = w
        n_dec = len(ch) if out_channels else latent_scales  # decoder levels built (coarsest first)
        self.stats = nn.ModuleList()
        self.merge = nn.ModuleList()
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for j in range(n_dec):
            w = ch[len(ch) - 1 - j]
            if j:  # upsample from the coarser level and fuse the skip connection
                self.up.append(nn.Conv2d(ch[len(ch) - j], w, 3, padding=1))
                self.dec.append(ConvBlock(2 * w, w, groups))
            if j < latent_scales:
                self.stats.append(nn.Conv2d(w, 2 * latent_channels, 1))
                self.merge.append(ConvBlock(w + latent_channels, w, groups))
        self.n_dec = n_dec
        self.out = nn.Conv2d(ch[0], out_channels, 1) if out_channels else None

    def forward(self, x: Tensor, draw: Draw) -> Tensor | None:
        skips = encode_levels(self.enc, x)
        h = skips.pop()
        for j in range(self.n_dec):
            if j:
                h = self.up[j - 1](F.interpolate(h, scale_factor=2.0, mode="nearest"))
                h = self.dec[j - 1](torch.cat([h, skips.pop()], 1))
            if j < self.latent_scales:
                mu, log_sigma = self.stats[j](h).chunk(2, dim=1)
                z = draw(j, mu, log_sigma.clamp(*LOG_SIGMA_RANGE))
                h = self.merge[j](torch.cat([h, z], 1))
        return None if self.out is None else self.out(h)


def _randn_like(t: Tensor, generator: torch.Generator | None) -> Tensor:
    """N(0, I) shaped like t, drawn on the generator's device (CPU generators give the same numbers
    on any device), returned on t's device."""
    device = generator.device if generator is not None else t.device
    return torch.randn(t.shape, generator=generator, device=device).to(t.device, t.dtype)


class HPUNet(Baseline):
    """HPU-Net baseline. ``baseline:`` fields read (default): channels (None = model.channels),
    latent_scales (3), latent_channels (1), kl_beta (1.0), recon ("mse"), recon_scale (0.1),
    uncertainty_samples (8)."""

    name = "hpunet"

    def __init__(self, bcfg: Any, in_channels: int, model_cfg: Any = None):
        super().__init__()
        widths = _get(bcfg, "channels", None) or (getattr(model_cfg, "channels", None) or (32, 64, 128))
        self.widths = tuple(int(w) for w in widths)
        groups = int(getattr(model_cfg, "norm_groups", 8) or 8)
        self.latent_scales = int(_get(bcfg, "latent_scales", 3))
        self.latent_channels = int(_get(bcfg, "latent_channels", 1))
        self.kl_beta = float(_get(bcfg, "kl_beta", 1.0))
        self.recon = str(_get(bcfg, "recon", "mse"))
        self.recon_scale = float(_get(bcfg, "recon_scale", 0.1))
        self.uncertainty_samples = int(_get(bcfg, "uncertainty_samples", 8))
        if not self.widths or min(self.widths) < 1:
            raise ConfigError(f"baseline.channels: expected positive widths, got {widths}")
        if not 1 <= self.latent_scales <= len(self.widths):
            raise ConfigError(f"baseline.latent_scales: expected 1..{len(self.widths)} (one per U-Net level at most), "
                              f"got {self.latent_scales}")
        if self.latent_channels < 1:
            raise ConfigError(f"baseline.latent_channels: expected >= 1, got {self.latent_channels}")
        if self.recon not in ("mse", "l1"):
            raise ConfigError(f"baseline.recon: expected 'mse' or 'l1', got {self.recon!r}")
        if not self.recon_scale > 0 or self.kl_beta < 0:
            raise ConfigError(f"baseline.recon_scale must be > 0 and kl_beta >= 0, got {self.recon_scale}, {self.kl_beta}")
        if self.uncertainty_samples < 2:
            raise ConfigError(f"baseline.uncertainty_samples: expected >= 2, got {self.uncertainty_samples}")
        self.in_channels = int(in_channels)
        self.prior = HierarchicalUNet(self.in_channels, self.widths, self.latent_scales, self.latent_channels, groups, 1)
        self.posterior = HierarchicalUNet(self.in_channels + 1, self.widths, self.latent_scales, self.latent_channels,
                                          groups, 0)

    def _finish(self, pred: Tensor, cond: Tensor, mask: Tensor) -> Tensor:
        """Inpainting (2-channel condition): copy the known pixels (mask = 0) from cond channel 0."""
        if self.in_channels == 2:
            return mask * pred + (1.0 - mask) * cond[:, :1]
        return pred

    def elbo_terms(self, x0: Tensor, cond: Tensor, mask: Tensor, generator: torch.Generator | None = None
                   ) -> tuple[Tensor, Tensor, Tensor]:
        """(reconstruction NLL, KL summed over scales, both per pixel of the batch; reconstruction x_hat)."""
        zs: list[Tensor] = []
        post: list[tuple[Tensor, Tensor]] = []

        def draw_posterior(j: int, mu: Tensor, log_sigma: Tensor) -> Tensor:
            post.append((mu, log_sigma))
            zs.append(gaussian_sample(mu, log_sigma, _randn_like(mu, generator)))
            return zs[-1]

        kls: list[Tensor] = []

        def use_posterior_z(j: int, mu: Tensor, log_sigma: Tensor) -> Tensor:
            kls.append(gaussian_kl(post[j][0], post[j][1], mu, log_sigma).sum())
            return zs[j]

        self.posterior(torch.cat([cond, x0], 1), draw_posterior)
        pred = self.prior(cond, use_posterior_z)
        npix = x0.numel()
        rec = (reconstruction_nll(pred, x0, self.recon, self.recon_scale) * mask).sum() / npix
        return rec, torch.stack(kls).sum() / npix, pred

    # -- contract ---------------------------------------------------------------------------
    def optimisers(self, lr: float, betas: tuple[float, float], weight_decay: float) -> dict[str, torch.optim.Optimizer]:
        return {"G": torch.optim.AdamW(self.parameters(), lr=lr, betas=betas, weight_decay=weight_decay)}

    def train_step(self, x0: Tensor, cond: Tensor, mask: Tensor, opts: dict[str, torch.optim.Optimizer],
                   step: int) -> dict[str, float]:
        check_inputs(cond, mask, self.in_channels, len(self.widths), "HPUNet.train_step")
        opts["G"].zero_grad(set_to_none=True)
        rec, kl, _ = self.elbo_terms(x0, cond, mask)
        loss = rec + self.kl_beta * kl
        loss.backward()
        self.clip(self.parameters())
        opts["G"].step()
        return {"loss": loss.item(), "rec": rec.item(), "kl": kl.item()}

    @torch.no_grad()
    def predict(self, cond: Tensor, mask: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One sample: z_l ~ p(z_l | z_<l, y) drawn from `generator` (scale by scale, coarsest first),
        decoded, clamped to [-1, 1]; inpainting copies the known pixels back."""
        check_inputs(cond, mask, self.in_channels, len(self.widths), "HPUNet.predict")

        def draw_prior(j: int, mu: Tensor, log_sigma: Tensor) -> Tensor:
            return gaussian_sample(mu, log_sigma, _randn_like(mu, generator))

        pred = self.prior(cond, draw_prior)
        return self._finish(pred.clamp(-1.0, 1.0), cond, mask)

    @torch.no_grad()
    def predict_with_uncertainty(self, cond: Tensor, mask: Tensor,
                                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(mean, per-pixel std) over ``uncertainty_samples`` prior samples drawn in turn from `generator`."""
        s = torch.stack([self.predict(cond, mask, generator) for _ in range(self.uncertainty_samples)])
        return s.mean(0), s.std(0)
