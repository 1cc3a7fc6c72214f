"""Networks of the (Medical) VDM; no loss or sampling lives here.

Score networks map (z_t, gamma_t, cond) -> eps_hat with z_t [B, *dims], gamma_t [B]:

- `ScoreNet`: the paper's (Rguibi et al. 2023, Sec. 2.5; the VDM colab's ScoreNet): the time
  embedding of gamma_t is concatenated with a conditioning vector (a class-label embedding, or
  nothing), passed through dense layers with swish to a vector `cond` that modulates every
  residual block FiLM-style (per-feature scale and shift); z (flattened) goes through a dense
  layer and `n_layers` residual blocks of two dense layers with swish; the output is added to
  the input: eps_hat = z + h. Paper: embedding_dim 128, 10 layers.
- `UNetScore`: meddiff's U-Net (nn.unet) as the score network, the image condition entering by
  channel concatenation, so the restoration tasks train under the VDM objective; or a class
  embedding added to the U-Net's time embedding (class-conditional generation).

Encoders / decoders (the decoder defines p(x | z_0)):

- `LevelEncoder` / `LevelDecoder`: the VDM reference: f = 2 (x + 1/2) / V - 1 (no parameters) and
  the per-pixel categorical over the V levels with logits -(z_0/alpha_0 - x_v)^2 / (2 e^gamma_0).
  This is the default for 8-bit images: its bits/dim is a likelihood of the discrete data.
- `ResNetEncoder` / `ResNetDecoder`: the paper's latent model (Sec. 2.4): x scaled to [-1, 1],
  flattened, a dense layer, a ResNet of `n_layers` blocks, a dense layer to `z_dim` (paper: 64);
  the decoder mirrors it and outputs per-pixel logits of a categorical over `vocab_size` levels
  (vocab_size 2 is exactly the paper's mean-field Bernoulli). The output layer has
  pixels x vocab_size units, so with 256 levels it suits small images only.

`VDMModel` only holds the parts (gamma, score net, encoder, decoder, optional class embedding)
so one state_dict (one checkpoint) stores them all, gamma's parameters included.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError
from ..nn.unet import UNet, timestep_embedding, zero_init
from .loss import categorical_log_prob, level_logits, level_values

NO_CLASS = -1  # the class label of "no class" (classifier-free guidance's unconditional branch): a zero class vector


def gamma_time(gamma_t: Tensor, gamma_min: float, gamma_max: float) -> Tensor:
    """gamma_t mapped to [0, 1000] for a sinusoidal embedding (as VDM's ScoreUNet: t = (g - g_min)/(g_max - g_min), x1000).

    gamma_min/max are the configured (initial) ends, constants of the network."""
    return 1000.0 * (gamma_t - gamma_min) / (gamma_max - gamma_min)


class FiLMResBlock(nn.Module):
    """x + W2 swish(LN(FiLM(W1 swish(LN(x)), cond))), FiLM(h, c) = h (1 + scale(c)) + shift(c); zero-init."""

    def __init__(self, width: int, cond_dim: int, middle: int | None = None):
        super().__init__()
        middle = middle or 2 * width
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(middle)
        self.dense1 = nn.Linear(width, middle)
        self.film = zero_init(nn.Linear(cond_dim, 2 * middle)) if cond_dim > 0 else None
        self.dense2 = zero_init(nn.Linear(middle, width))

    def forward(self, x: Tensor, cond: Tensor | None) -> Tensor:
        h = self.dense1(F.silu(self.norm1(x)))
        if self.film is not None and cond is not None:
            scale, shift = self.film(cond).chunk(2, dim=-1)
            h = h * (1 + scale) + shift
        return x + self.dense2(F.silu(self.norm2(h)))


class ResNet(nn.Module):
    """`n_layers` FiLM residual blocks of width `width` (the paper's ResNet, Sec. 2.4-2.5)."""

    def __init__(self, width: int, n_layers: int, cond_dim: int = 0):
        super().__init__()
        self.blocks = nn.ModuleList(FiLMResBlock(width, cond_dim) for _ in range(n_layers))

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        for block in self.blocks:
            x = block(x, cond)
        return x


class ScoreNet(nn.Module):
    """The paper's ScoreNet on z [B, *dims] (flattened to D = data_dim features); cond_dim 0 = unconditional."""

    def __init__(self, data_dim: int, embedding_dim: int = 128, n_layers: int = 10, cond_dim: int = 0,
                 gamma_min: float = -13.3, gamma_max: float = 5.0):
        super().__init__()
        self.embedding_dim, self.cond_dim = embedding_dim, cond_dim
        self.gamma_range = (gamma_min, gamma_max)
        e = embedding_dim
        self.cond_mlp = nn.Sequential(nn.Linear(e + cond_dim, 4 * e), nn.SiLU(), nn.Linear(4 * e, 4 * e), nn.SiLU(),
                                      nn.Linear(4 * e, e))
        self.dense_in = nn.Linear(data_dim, e)
        self.resnet = ResNet(e, n_layers, cond_dim=e)
        self.dense_out = zero_init(nn.Linear(e, data_dim))

    def forward(self, z: Tensor, gamma_t: Tensor, cond: Tensor | None = None) -> Tensor:
        """z [B, *dims], gamma_t [B] or scalar, cond [B, cond_dim] or None -> eps_hat like z."""
        gamma_t = gamma_t.expand(z.shape[0]) if gamma_t.ndim == 0 else gamma_t
        temb = timestep_embedding(gamma_time(gamma_t, *self.gamma_range), self.embedding_dim).to(z.dtype)
        if self.cond_dim:
            if cond is None or cond.shape != (z.shape[0], self.cond_dim):
                got = None if cond is None else tuple(cond.shape)
                raise InputError(f"ScoreNet condition: expected shape {(z.shape[0], self.cond_dim)}, got {got}")
            temb = torch.cat([temb, cond.to(z.dtype)], dim=1)
        c = self.cond_mlp(temb)
        h = self.resnet(self.dense_in(z.flatten(1)), c)
        return z + self.dense_out(h).view_as(z)


class UNetScore(nn.Module):
    """meddiff's U-Net as a VDM score network: eps_hat = unet(cat(z_t, cond), 1000 (gamma - g_min)/(g_max - g_min)).

    cond: condition planes [B, C_cond, *spatial] (the degraded image, mask) or None; the U-Net's
    in_channels must equal z's channels + C_cond. A class-conditional model instead has a U-Net built
    with cond_dim = the class embedding's width, and cond is the class embedding [B, cond_dim], added
    to the time embedding (through a projection that starts at zero)."""

    def __init__(self, unet: UNet, gamma_min: float = -13.3, gamma_max: float = 5.0):
        super().__init__()
        self.unet, self.gamma_range = unet, (gamma_min, gamma_max)

    def forward(self, z: Tensor, gamma_t: Tensor, cond: Tensor | None = None) -> Tensor:
        gamma_t = gamma_t.expand(z.shape[0]) if gamma_t.ndim == 0 else gamma_t
        time = gamma_time(gamma_t, *self.gamma_range)
        if self.unet.cond_dim > 0:
            return self.unet(z, time, cond)
        inp = z if cond is None else torch.cat([z, cond.to(z.dtype)], dim=1)
        return self.unet(inp, time)


def check_levels(x: Tensor, vocab_size: int) -> None:
    if x.is_floating_point() and not torch.equal(x, x.round()):
        raise InputError("data for the VDM likelihood must be integer levels (see to_levels), got non-integer values")
    if x.numel() and (int(x.min()) < 0 or int(x.max()) >= vocab_size):
        raise InputError(f"data levels in [{int(x.min())}, {int(x.max())}]: expected 0..{vocab_size - 1}")


def to_levels(image: Tensor, vocab_size: int = 256) -> Tensor:
    """Image in [-1, 1] (meddiff's normalised range) -> int64 levels round((image + 1)/2 (V - 1)) in 0..V-1."""
    if not torch.isfinite(image).all() or image.min() < -1 or image.max() > 1:
        raise InputError("image for to_levels: expected finite values in [-1, 1]")
    return torch.round((image + 1) / 2 * (vocab_size - 1)).long()


class LevelEncoder(nn.Module):
    """f = 2 (x + 1/2) / V - 1: levels 0..V-1 -> bin centres in (-1, 1) (VDM reference `encode`)."""

    def __init__(self, vocab_size: int = 256):
        super().__init__()
        self.vocab_size = vocab_size

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        check_levels(x, self.vocab_size)
        return 2.0 * (x.float() + 0.5) / self.vocab_size - 1.0


class LevelDecoder(nn.Module):
    """log p(x | z_0): independent categoricals over the V levels with logits of `loss.level_logits`."""

    def __init__(self, vocab_size: int = 256):
        super().__init__()
        self.vocab_size = vocab_size

    def logits(self, z0_rescaled: Tensor, gamma_0: Tensor, cond: Tensor | None = None) -> Tensor:
        return level_logits(z0_rescaled, gamma_0, self.vocab_size)

    def log_prob(self, x: Tensor, z0_rescaled: Tensor, gamma_0: Tensor, cond: Tensor | None = None) -> Tensor:
        return categorical_log_prob(self.logits(z0_rescaled, gamma_0), x)


class ResNetEncoder(nn.Module):
    """The paper's encoder: x levels -> [-1, 1] -> flatten -> dense -> ResNet -> dense -> f [B, z_dim]."""

    def __init__(self, data_shape: tuple[int, ...], z_dim: int = 64, hidden: int = 256, n_layers: int = 6,
                 vocab_size: int = 256, cond_dim: int = 0):
        super().__init__()
        self.vocab_size = vocab_size
        self.dense_in = nn.Linear(math.prod(data_shape), hidden)
        self.resnet = ResNet(hidden, n_layers, cond_dim)
        self.dense_out = nn.Linear(hidden, z_dim)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        check_levels(x, self.vocab_size)
        u = 2.0 * x.float().flatten(1) / (self.vocab_size - 1) - 1.0
        return self.dense_out(self.resnet(self.dense_in(u), cond))


class ResNetDecoder(nn.Module):
    """The paper's decoder: z_0/alpha_0 -> dense -> ResNet -> dense -> per-pixel logits over vocab_size levels."""

    def __init__(self, data_shape: tuple[int, ...], z_dim: int = 64, hidden: int = 256, n_layers: int = 6,
                 vocab_size: int = 2, cond_dim: int = 0):
        super().__init__()
        self.data_shape, self.vocab_size = tuple(data_shape), vocab_size
        self.dense_in = nn.Linear(z_dim, hidden)
        self.resnet = ResNet(hidden, n_layers, cond_dim)
        self.dense_out = nn.Linear(hidden, math.prod(data_shape) * vocab_size)

    def logits(self, z0_rescaled: Tensor, gamma_0: Tensor | None = None, cond: Tensor | None = None) -> Tensor:
        h = self.resnet(self.dense_in(z0_rescaled), cond)
        return self.dense_out(h).view(z0_rescaled.shape[0], *self.data_shape, self.vocab_size)

    def log_prob(self, x: Tensor, z0_rescaled: Tensor, gamma_0: Tensor, cond: Tensor | None = None) -> Tensor:
        return categorical_log_prob(self.logits(z0_rescaled, gamma_0, cond), x)


class VDMModel(nn.Module):
    """The trainable parts, held together so one state_dict stores them (gamma's parameters included).

    n_classes > 0 adds a class-label embedding of size class_dim (the score net's cond_dim).
    """

    def __init__(self, gamma: nn.Module, score: nn.Module, encoder: nn.Module | None = None,
                 decoder: nn.Module | None = None, n_classes: int = 0, class_dim: int = 0):
        super().__init__()
        self.gamma, self.score = gamma, score
        self.encoder = encoder if encoder is not None else LevelEncoder()
        self.decoder = decoder if decoder is not None else LevelDecoder()
        self.class_embedding = nn.Embedding(n_classes, class_dim) if n_classes > 0 else None

    def embed(self, labels: Tensor | None) -> Tensor | None:
        """Class labels int64 [B] -> conditioning vectors [B, class_dim] (None if unconditional).

        Label NO_CLASS (-1) is "no class", the unconditional branch of classifier-free guidance: the
        zero vector (no parameter of its own, so checkpoints without it load unchanged)."""
        if self.class_embedding is None:
            if labels is not None:
                raise InputError("class labels given to an unconditional VDM (n_classes = 0)")
            return None
        if labels is None:
            raise InputError("this VDM is class-conditional: class labels are required")
        n = self.class_embedding.num_embeddings
        if labels.numel() and (int(labels.min()) < NO_CLASS or int(labels.max()) >= n):
            raise InputError(f"class labels in [{int(labels.min())}, {int(labels.max())}]: expected 0..{n - 1} "
                             f"(or {NO_CLASS}, no class)")
        labels = labels.long()
        none = labels == NO_CLASS
        if not bool(none.any()):
            return self.class_embedding(labels)
        emb = self.class_embedding(labels.clamp_min(0))
        return torch.where(none[:, None], torch.zeros((), dtype=emb.dtype, device=emb.device), emb)


__all__ = ["ScoreNet", "UNetScore", "LevelEncoder", "LevelDecoder", "ResNetEncoder", "ResNetDecoder", "VDMModel",
           "FiLMResBlock", "ResNet", "gamma_time", "to_levels", "level_values", "NO_CLASS"]
