"""UP-GAN: uncertainty-guided progressive GAN (Upadhyay, Chen, Hepp, Gatidis, Akata, MICCAI 2021,
"Uncertainty-guided progressive GANs for medical image translation"), a baseline of Med-cDiff
(denoising and inpainting, Hung et al. 2023, Tables 2-3).

Model. M stages (``baseline.stages``, default 3). Stage m is a small U-Net generator G_m with three
heads that give, per pixel, the parameters of a generalised Gaussian (GG) over the target:

    mean  mu_m,   scale alpha_m > 0,   shape beta_m > 0.

Stage 1 sees the condition y; stage m > 1 sees cat(y, mu_{m-1}, u_{m-1}), where u is the log of
the GG's aleatoric std (from eq. :func:`gg_variance`), clamped to [log 1e-3, log 2]
(:func:`uncertainty_map`): each stage refines the previous estimate and is told where it was
uncertain. (The authors' public code, ExplainableML/UncerGuidedI2I, feeds (mu, alpha, beta); one
bounded channel carries the same ranking without the raw variance's ~1e3 values at initialisation.)

Loss of stage m (paper eq. for L_G; weights, least-squares GAN and the patch discriminator as
in the authors' public implementation):

    L_m = lambda_l1 * |mu_m - x0|_1  +  lambda_gg * NLL_GG(x0 | mu_m, alpha_m, beta_m)  +  lambda_adv * L_adv(mu_m)

with lambda_l1 = 1, lambda_gg = 1e-3, lambda_adv = 1e-3 by default (the authors' code anneals
(lambda_l1, lambda_gg) from (1, 1e-4) over (0.5, 1e-3) to (0.1, 1e-2) across its three training
blocks; meddiff's trainer has no epoch blocks, so one fixed pair from the middle of that range is
used and both are configurable). One PatchGAN discriminator (pix2pix; LSGAN objective) judges the
means of all stages against real targets.

Training schedule: **joint** by default (``stage_steps = 0``): every optimiser step trains all M
stages, each on its own loss, with the previous stage's outputs detached, so the gradient flow is
that of the paper's progressive scheme (stage m never changes stage m-1) while all stages learn
at once. ``stage_steps = K > 0`` gives the paper's **progressive** schedule: steps [0, K) train
stage 1 only, [K, 2K) stage 2 with stage 1 frozen, ..., stage M from (M-1)K on.

Inpainting: at prediction the known pixels (mask = 0) are copied from the condition (channel 0)
and their uncertainty is 0; training uses the whole image, as the paper.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError, InputError
from .base import Baseline

# Numerical floors of the GG parameters (images are in [-1, 1]): alpha >= 1e-3 is a residual scale
# far below one grey level, beta >= 0.2 keeps Gamma(3/beta)/Gamma(1/beta) finite in float32.
ALPHA_MIN = 1e-3
BETA_MIN = 0.2
# beta <= BETA_MIN + 10: the paper's shapes lie well inside (Laplace 1, Gaussian 2; large beta is a
# uniform box); unbounded, exp(b) reached 400 at initialisation on real data and (|r| / alpha)^beta
# overflowed to inf in float32 on the first step.
BETA_LOG_MAX = math.log(10.0)


# ----------------------------------------------------------------------------------------------
# Generalised Gaussian (Nadarajah 2005; UP-GAN eqs. for the likelihood and the aleatoric variance)
# ----------------------------------------------------------------------------------------------

def gg_nll(x: Tensor, mu: Tensor, alpha: Tensor, beta: Tensor) -> Tensor:
    """Per-pixel negative log-likelihood of the generalised Gaussian (UP-GAN's adaptive loss L_ab):

        p(x | mu, alpha, beta) = beta / (2 alpha Gamma(1/beta)) * exp(-(|x - mu| / alpha)^beta)
        -log p = (|x - mu| / alpha)^beta - log beta + log(2 alpha) + log Gamma(1/beta)

    beta = 2 is a Gaussian with std alpha / sqrt(2), beta = 1 a Laplace with scale alpha. The
    paper drops the constant log 2; it is kept here so the value is the exact NLL. |x - mu| is
    floored at 1e-12 so the gradient of |r|^beta (beta < 1) stays finite at r = 0.
    """
    r = (x - mu).abs().clamp_min(1e-12)
    return (r / alpha).pow(beta) - torch.log(beta) + torch.log(2.0 * alpha) + torch.lgamma(1.0 / beta)


def gg_variance(alpha: Tensor, beta: Tensor) -> Tensor:
    """Aleatoric variance of the generalised Gaussian (UP-GAN, uncertainty map):

        Var = alpha^2 Gamma(3/beta) / Gamma(1/beta)      (computed with log-Gamma for stability)
    """
    return alpha.pow(2) * torch.exp(torch.lgamma(3.0 / beta) - torch.lgamma(1.0 / beta))


def lsgan_d_loss(d_real: Tensor, d_fake: Tensor) -> Tensor:
    """Least-squares GAN discriminator loss (Mao et al. 2017): 1/2 [E (D(x) - 1)^2 + E D(G(y))^2]."""
    return 0.5 * ((d_real - 1.0).pow(2).mean() + d_fake.pow(2).mean())


def lsgan_g_loss(d_fake: Tensor) -> Tensor:
    """Least-squares GAN generator loss (Mao et al. 2017): E (D(G(y)) - 1)^2."""
    return (d_fake - 1.0).pow(2).mean()


# ----------------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------------

def _groups(ch: int, groups: int) -> int:
    """The largest group count <= `groups` that divides `ch` (GroupNorm needs ch % groups == 0)."""
    g = max(1, min(groups, ch))
    while ch % g:
        g -= 1
    return g


def uncertainty_map(alpha: Tensor, beta: Tensor) -> Tensor:
    """What stage m + 1 sees of stage m's uncertainty: log of the GG std, clamped to
    [log ALPHA_MIN, log 2] (2 = the whole [-1, 1] range). The raw variance reached ~1e3 at
    initialisation (beta near its floor makes Gamma(3/beta)/Gamma(1/beta) huge), which drove the
    next stage's heads to inf on the first step."""
    return (0.5 * torch.log(gg_variance(alpha, beta))).clamp(math.log(ALPHA_MIN), math.log(2.0))


def positive(a: Tensor, floor: float) -> Tensor:
    """floor + exp(a) (a clamped to <= 10): a log-scale parametrisation, so Adam moves alpha by
    factors rather than by steps (softplus needed thousands of steps to shrink alpha from ~0.7 to
    ~0.05 on the toy test)."""
    return floor + torch.exp(a.clamp(max=10.0))


class ConvBlock(nn.Module):
    """(3x3 conv -> GroupNorm -> SiLU) x 2."""

    def __init__(self, cin: int, cout: int, groups: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(_groups(cout, groups), cout), nn.SiLU(),
            nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(_groups(cout, groups), cout), nn.SiLU(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def encode_levels(blocks: nn.ModuleList, x: Tensor) -> list[Tensor]:
    """The U-Net encoder the UP-GAN and HPUNet networks share: block i runs at H / 2^i (2x average
    pooling between blocks); returns every level's features, finest first."""
    skips, h = [], x
    for i, blk in enumerate(blocks):
        if i:
            h = F.avg_pool2d(h, 2)
        h = blk(h)
        skips.append(h)
    return skips


class ThreeHeadUNet(nn.Module):
    """U-Net (Ronneberger et al. 2015) with three 1x1 heads: mean, alpha, beta of a GG per pixel.

    Levels ``channels[i]`` at resolution H / 2^i (2x average-pool down, nearest 2x up + conv);
    alpha = ALPHA_MIN + exp(a), beta = BETA_MIN + exp(b) (:func:`positive`).
    """

    def __init__(self, in_channels: int, channels: Sequence[int], groups: int):
        super().__init__()
        ch = list(channels)
        self.enc = nn.ModuleList()
        c = in_channels
        for w in ch:
            self.enc.append(ConvBlock(c, w, groups))
            c = w
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for i in range(len(ch) - 1, 0, -1):
            self.up.append(nn.Conv2d(ch[i], ch[i - 1], 3, padding=1))
            self.dec.append(ConvBlock(2 * ch[i - 1], ch[i - 1], groups))
        self.heads = nn.Conv2d(ch[0], 3, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        skips = encode_levels(self.enc, x)
        h = skips.pop()
        for up, dec in zip(self.up, self.dec):
            h = up(F.interpolate(h, scale_factor=2.0, mode="nearest"))
            h = dec(torch.cat([h, skips.pop()], 1))
        mu, a, b = self.heads(h).unbind(1)
        return mu[:, None], positive(a[:, None], ALPHA_MIN), positive(b[:, None].clamp(max=BETA_LOG_MAX), BETA_MIN)


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator (Isola et al. 2017): ``layers`` 4x4 stride-2 convs (GroupNorm after the
    first), one 4x4 stride-1 conv, then a 4x4 conv to one logit per overlapping patch."""

    def __init__(self, in_channels: int, width: int, layers: int, groups: int):
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(in_channels, width, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = width
        for i in range(1, layers + 1):
            stride = 2 if i < layers else 1
            cout = width * min(2**i, 8)
            mods += [nn.Conv2d(c, cout, 4, stride, 1), nn.GroupNorm(_groups(cout, groups), cout), nn.LeakyReLU(0.2)]
            c = cout
        mods.append(nn.Conv2d(c, 1, 4, 1, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


# ----------------------------------------------------------------------------------------------
# The baseline
# ----------------------------------------------------------------------------------------------

def _get(bcfg: Any, name: str, default: Any) -> Any:
    v = getattr(bcfg, name, None) if bcfg is not None else None
    return default if v is None else v


def check_inputs(cond: Tensor, mask: Tensor, in_channels: int, levels: int, who: str) -> None:
    """Shapes the baselines accept: cond [B, in_channels, H, W], mask [B, 1, H, W], H and W divisible
    by 2^(levels - 1)."""
    if cond.ndim != 4 or cond.shape[1] != in_channels:
        raise InputError(f"{who}: expected cond of shape [B, {in_channels}, H, W], got {tuple(cond.shape)}")
    if mask.shape != (cond.shape[0], 1, *cond.shape[2:]):
        raise InputError(f"{who}: expected mask of shape {(cond.shape[0], 1, *cond.shape[2:])}, got {tuple(mask.shape)}")
    k = 2 ** (levels - 1)
    if cond.shape[2] % k or cond.shape[3] % k:
        raise InputError(f"{who}: image size {tuple(cond.shape[2:])} must be divisible by {k} "
                         f"(2^(levels-1) for {levels} U-Net levels)")


class UPGAN(Baseline):
    """UP-GAN baseline. ``baseline:`` fields read (default): stages (3), channels (None = model.channels),
    l1_weight (1.0), gg_weight (1e-3), adv_weight (1e-3), disc_width (32), disc_layers (3),
    stage_steps (0 = joint training)."""

    name = "upgan"

    def __init__(self, bcfg: Any, in_channels: int, model_cfg: Any = None):
        super().__init__()
        self.stages = int(_get(bcfg, "stages", 3))
        widths = _get(bcfg, "channels", None) or (getattr(model_cfg, "channels", None) or (32, 64, 128))
        self.widths = tuple(int(w) for w in widths)
        groups = int(getattr(model_cfg, "norm_groups", 8) or 8)
        self.l1_weight = float(_get(bcfg, "l1_weight", 1.0))
        self.gg_weight = float(_get(bcfg, "gg_weight", 1e-3))
        self.adv_weight = float(_get(bcfg, "adv_weight", 1e-3))
        self.stage_steps = int(_get(bcfg, "stage_steps", 0))
        d_channels, d_layers = int(_get(bcfg, "disc_width", 32)), int(_get(bcfg, "disc_layers", 3))
        if self.stages < 1:
            raise ConfigError(f"baseline.stages: expected >= 1, got {self.stages}")
        if not self.widths or min(self.widths) < 1:
            raise ConfigError(f"baseline.channels: expected positive widths, got {widths}")
        if self.stage_steps < 0:
            raise ConfigError(f"baseline.stage_steps: expected >= 0 (0 = joint training), got {self.stage_steps}")
        self.in_channels = int(in_channels)
        self.generators = nn.ModuleList(
            ThreeHeadUNet(self.in_channels + (2 if m else 0), self.widths, groups) for m in range(self.stages))
        self.discriminator = PatchDiscriminator(1, d_channels, d_layers, groups)

    # -- model ------------------------------------------------------------------------------
    def forward_stages(self, cond: Tensor, upto: int | None = None, detach_between: bool = True
                       ) -> list[tuple[Tensor, Tensor, Tensor]]:
        """[(mu_m, alpha_m, beta_m)] for stages 1..upto (all by default); stage m > 1 gets
        cat(cond, mu_{m-1}, uncertainty_map_{m-1}) with the previous outputs detached (progressive gradient flow)."""
        outs = []
        n = self.stages if upto is None else upto
        for m in range(n):
            if m == 0:
                x = cond
            else:
                mu, a, b = outs[-1]
                prev_mu, prev_var = mu, uncertainty_map(a, b)
                if detach_between:
                    prev_mu, prev_var = prev_mu.detach(), prev_var.detach()
                x = torch.cat([cond, prev_mu, prev_var], 1)
            outs.append(self.generators[m](x))
        return outs

    def active_stage(self, step: int) -> int:
        """Index of the last stage trained at `step` (all stages when training jointly)."""
        if self.stage_steps == 0:
            return self.stages - 1
        return min(step // self.stage_steps, self.stages - 1)

    # -- contract ---------------------------------------------------------------------------
    def optimisers(self, lr: float, betas: tuple[float, float], weight_decay: float) -> dict[str, torch.optim.Optimizer]:
        return {
            "G": torch.optim.AdamW(self.generators.parameters(), lr=lr, betas=betas, weight_decay=weight_decay),
            "D": torch.optim.AdamW(self.discriminator.parameters(), lr=lr, betas=betas, weight_decay=weight_decay),
        }

    def train_step(self, x0: Tensor, cond: Tensor, mask: Tensor, opts: dict[str, torch.optim.Optimizer],
                   step: int) -> dict[str, float]:
        check_inputs(cond, mask, self.in_channels, len(self.widths), "UPGAN.train_step")
        last = self.active_stage(step)
        first = 0 if self.stage_steps == 0 else last
        with torch.no_grad():  # frozen earlier stages (progressive schedule only)
            frozen = self.forward_stages(cond, upto=first) if first else []
        outs = list(frozen)
        for m in range(first, last + 1):
            if m == 0:
                x = cond
            else:
                mu, a, b = outs[-1]
                x = torch.cat([cond, mu.detach(), uncertainty_map(a, b).detach()], 1)
            outs.append(self.generators[m](x))
        trained = outs[first:]
        fakes = torch.cat([mu for mu, _, _ in trained], 0)

        # generator update (discriminator parameters are not stepped here; their grads are cleared below)
        opts["G"].zero_grad(set_to_none=True)
        l1 = torch.stack([F.l1_loss(mu, x0) for mu, _, _ in trained]).sum()
        gg = torch.stack([gg_nll(x0, mu, a, b).mean() for mu, a, b in trained]).sum()
        adv = lsgan_g_loss(self.discriminator(fakes))
        loss_g = self.l1_weight * l1 + self.gg_weight * gg + self.adv_weight * adv * len(trained)
        loss_g.backward()
        self.clip(self.generators.parameters())
        opts["G"].step()

        # discriminator update: real targets vs the (detached) means of the trained stages
        opts["D"].zero_grad(set_to_none=True)
        reals = x0.repeat(len(trained), 1, 1, 1)
        loss_d = lsgan_d_loss(self.discriminator(reals), self.discriminator(fakes.detach()))
        loss_d.backward()
        self.clip(self.discriminator.parameters())
        opts["D"].step()
        return {"loss": loss_g.item(), "l1": l1.item(), "gg_nll": gg.item(), "adv_g": adv.item(),
                "loss_d": loss_d.item(), "stage": float(last + 1)}

    @torch.no_grad()
    def predict_with_uncertainty(self, cond: Tensor, mask: Tensor,
                                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(final stage's mean clamped to [-1, 1], per-pixel std = sqrt(GG variance)); deterministic,
        `generator` is unused. Inpainting (2-channel cond): known pixels copied, their std 0."""
        check_inputs(cond, mask, self.in_channels, len(self.widths), "UPGAN.predict")
        mu, a, b = self.forward_stages(cond)[-1]
        mean, std = mu.clamp(-1.0, 1.0), gg_variance(a, b).sqrt()
        if cond.shape[1] == 2:
            mean = mask * mean + (1 - mask) * cond[:, :1]
            std = std * mask
        return mean, std

    @torch.no_grad()
    def predict(self, cond: Tensor, mask: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.predict_with_uncertainty(cond, mask, generator)[0]
