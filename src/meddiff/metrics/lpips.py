"""LPIPS perceptual distance, offline: shift-tolerant LPIPS (default) and standard v0.1 AlexNet LPIPS.

LPIPS (Zhang et al., "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric",
CVPR 2018, eq. 1): for layers l of a pretrained network with features y^l of C_l channels,

    d(x0, x1) = sum_l 1/(H_l W_l) sum_{h,w} || w_l * (yhat0^l_hw - yhat1^l_hw) ||_2^2,

where yhat = y / ||y||_2 is unit-normalised along channels and w_l >= 0 are learned per-channel
weights (a 1x1 convolution without bias). Inputs are in [-1, 1] and are first standardised
with the ImageNet mean and standard deviation (expressed on that scale).

Variants (``net=``):

- ``"alex-st"`` (default), ``"vgg-st"``: shift-tolerant LPIPS (Ghildyal and Liu, "Shift-tolerant
  Perceptual Similarity Metric", ECCV 2022), the variant "antialiased, blur-pool with reflection
  padding of 2, first convolution at stride 1, blur after": every stride-2 step is a stride-1
  max-pool or convolution followed by a 3x3 binomial blur with stride 2 (Zhang, "Making
  Convolutional Networks Shift-Invariant Again", ICML 2019). Its complete weights (backbone and
  heads) ship in the PyPI package ``stlpips-pytorch`` (``weights/vST0.0/*_shift_tolerant.pth``,
  BSD-2-Clause); meddiff reads only that file, the package's code is not imported.
- ``"alex"``: standard LPIPS v0.1 with torchvision's AlexNet layer layout. Its ImageNet backbone
  is not shipped by any package meddiff may download, so the user passes ``backbone=`` a local
  torchvision ``alexnet`` state dict (``features.*`` keys); the linear heads are read from
  ``heads=`` or from an installed ``lpips`` package (``lpips/weights/v0.1/alex.pth``). Nothing
  is downloaded.

Grayscale images ``[H, W]`` or ``[B, 1, H, W]`` in [-1, 1] are replicated to 3 channels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import InputError
from .weights import MissingWeightsError, package_file, package_version

ArrayLike = Union[np.ndarray, torch.Tensor]

NETS = ("alex-st", "vgg-st", "alex")
DEFAULT_NET = "alex-st"

# ImageNet channel statistics (on [0, 1]); LPIPS applies them on the [-1, 1] scale.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Smallest image side accepted. Measured limits (reflection padding / pooling at the deepest
# layer): alex-st runs from 21 pixels, vgg-st from 18, alex (stride-4 first layer) from 31;
# one rule of 32 for all keeps results comparable between variants.
MIN_SIZE = {"alex-st": 32, "vgg-st": 32, "alex": 32}

# Values outside this band are not images on meddiff's [-1, 1] model scale (e.g. HU values).
_RANGE_TOL = 0.5

_ST_FILES = {"alex-st": "weights/vST0.0/alex_shift_tolerant.pth", "vgg-st": "weights/vST0.0/vgg_shift_tolerant.pth"}


class BlurPool(nn.Module):
    """Anti-aliased stride-2 downsampling (Zhang 2019): reflect-pad by 2, blur with the 3x3
    binomial filter [1, 2, 1]^T [1, 2, 1] / 16 per channel, keep every second pixel."""

    def __init__(self, channels: int):
        super().__init__()
        b = torch.tensor([1.0, 2.0, 1.0])
        k = torch.outer(b, b) / 16.0
        self.register_buffer("filt", k.expand(channels, 1, 3, 3).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), self.filt, stride=2, groups=x.shape[1])


def _conv_relu(cin: int, cout: int, k: int, stride: int = 1, pad: int = 0) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride=stride, padding=pad), nn.ReLU()]


def alexnet_layers() -> tuple[list[nn.Module], list[tuple[int, int]]]:
    """AlexNet feature layers in torchvision's layout (``features.0`` ... ``features.11``) and
    the five LPIPS taps (after relu1 ... relu5) as [start, end) index ranges."""
    layers = [*_conv_relu(3, 64, 11, 4, 2), nn.MaxPool2d(3, 2),
              *_conv_relu(64, 192, 5, 1, 2), nn.MaxPool2d(3, 2),
              *_conv_relu(192, 384, 3, 1, 1), *_conv_relu(384, 256, 3, 1, 1), *_conv_relu(256, 256, 3, 1, 1)]
    return layers, [(0, 2), (2, 5), (5, 8), (8, 10), (10, 12)]


def alexnet_st_layers() -> tuple[list[nn.Module], list[tuple[int, int]]]:
    """Shift-tolerant AlexNet (Ghildyal and Liu 2022): first convolution at stride 1 then blur-pool,
    stride-1 max-pools each followed by blur-pool; five taps after each ReLU."""
    layers = [nn.Conv2d(3, 64, 11, stride=1, padding=2), BlurPool(64), nn.ReLU(),
              nn.MaxPool2d(3, 1), BlurPool(64), *_conv_relu(64, 192, 5, 1, 2),
              nn.MaxPool2d(3, 1), BlurPool(192), *_conv_relu(192, 384, 3, 1, 1),
              *_conv_relu(384, 256, 3, 1, 1), *_conv_relu(256, 256, 3, 1, 1)]
    return layers, [(0, 3), (3, 7), (7, 11), (11, 13), (13, 15)]


def vgg16_st_layers() -> tuple[list[nn.Module], list[tuple[int, int]]]:
    """Shift-tolerant VGG-16 (configuration D): each 2x2/2 max-pool becomes a 2x2/1 max-pool
    plus blur-pool; taps after relu1_2, relu2_2, relu3_3, relu4_3, relu5_3."""
    layers: list[nn.Module] = []
    cin = 3
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512):
        if v == "M":
            layers += [nn.MaxPool2d(2, 1), BlurPool(cin)]
        else:
            layers += _conv_relu(cin, int(v), 3, 1, 1)
            cin = int(v)
    return layers, [(0, 4), (4, 10), (10, 18), (18, 26), (26, 34)]


class TappedNet(nn.Module):
    """A feature stack cut into ``slice1`` ... ``sliceK``; forward returns each slice's output.
    Sub-module names keep the global layer index, so state dicts of the reference layout load."""

    def __init__(self, layers: Sequence[nn.Module], taps: Sequence[tuple[int, int]]):
        super().__init__()
        self.n = len(taps)
        for k, (a, b) in enumerate(taps, start=1):
            s = nn.Sequential()
            for i in range(a, b):
                s.add_module(str(i), layers[i])
            setattr(self, f"slice{k}", s)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for k in range(1, self.n + 1):
            x = getattr(self, f"slice{k}")(x)
            out.append(x)
        return out


class ScalingLayer(nn.Module):
    """Standardise [-1, 1] RGB with ImageNet statistics: (x - (2 mean - 1)) / (2 std)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor([2 * m - 1 for m in IMAGENET_MEAN]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([2 * s for s in IMAGENET_STD]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale


class LinearHead(nn.Module):
    """The learned non-negative channel weights w_l as a bias-free 1x1 convolution. Slot 0 held a
    dropout during training (identity at evaluation); the convolution is ``model.1``."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def unit_normalize(y: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """yhat = y / (||y||_2 + eps) along the channel axis (Zhang et al. 2018, eq. 1)."""
    return y / (y.square().sum(dim=1, keepdim=True).sqrt() + eps)


class LPIPS(nn.Module):
    """LPIPS network: scaling layer, tapped backbone ``net``, heads ``lin0`` ... ``lin4``.

    ``name`` says which variant and which weights this instance computes.
    """

    def __init__(self, variant: str, name: str = ""):
        super().__init__()
        builders = {"alex-st": alexnet_st_layers, "vgg-st": vgg16_st_layers, "alex": alexnet_layers}
        if variant not in builders:
            raise InputError(f"unknown LPIPS network {variant!r}; expected one of {list(NETS)}")
        layers, taps = builders[variant]()
        self.variant = variant
        self.name = name or variant
        self.scaling_layer = ScalingLayer()
        self.net = TappedNet(layers, taps)
        channels = [next(m.out_channels for m in reversed(layers[a:b]) if isinstance(m, nn.Conv2d)) for a, b in taps]
        for k, c in enumerate(channels):
            setattr(self, f"lin{k}", LinearHead(c))
        self.n_layers = len(channels)
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """Per-image distance ``[B]`` (eq. 1) between ``[B, 3, H, W]`` batches in [-1, 1]."""
        f0 = self.net(self.scaling_layer(x0))
        f1 = self.net(self.scaling_layer(x1))
        d = torch.zeros(x0.shape[0], dtype=x0.dtype, device=x0.device)
        for k in range(self.n_layers):
            diff = (unit_normalize(f0[k]) - unit_normalize(f1[k])).square()
            d = d + getattr(self, f"lin{k}")(diff).mean(dim=(1, 2, 3))
        return d


def _load_state(path: Path, what: str) -> dict:
    """``torch.load`` a state dict (tensors only) or raise InputError naming the file."""
    if not Path(path).is_file():
        raise MissingWeightsError(f"{what}: file {str(path)!r} does not exist")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt / not a torch file
        raise InputError(f"{what}: cannot read {str(path)!r} as a PyTorch state dict ({e})") from e
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise InputError(f"{what}: {str(path)!r} holds a {type(sd).__name__}, expected a state dict")
    return sd


def _load_into(model: nn.Module, sd: dict, source: str) -> None:
    """Load ``sd`` strictly, with an InputError listing missing/unexpected/mis-shaped keys."""
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = [f"{k}: {tuple(sd[k].shape)} != {tuple(own[k].shape)}" for k in own if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise InputError(f"weights {source} do not fit LPIPS {getattr(model, 'variant', '')}: missing {missing[:6]}, "
                         f"unexpected {unexpected[:6]}, shape mismatches {shapes[:6]}")
    model.load_state_dict(sd, strict=True)


def build_shift_tolerant(net: str = "alex-st") -> LPIPS:
    """Shift-tolerant LPIPS ``net`` in {"alex-st", "vgg-st"} with the complete weights shipped in
    ``stlpips-pytorch`` (backbone, heads and scaling constants all come from the file)."""
    if net not in _ST_FILES:
        raise InputError(f"unknown shift-tolerant LPIPS network {net!r}; expected one of {sorted(_ST_FILES)}")
    path = package_file("stlpips_pytorch", _ST_FILES[net], "stlpips-pytorch", f"LPIPS {net!r}")
    backbone = "AlexNet" if net == "alex-st" else "VGG-16"
    model = LPIPS(net, name=f"ST-LPIPS {backbone} (shift-tolerant, Ghildyal and Liu 2022; weights vST0.0 "
                            f"from stlpips-pytorch {package_version('stlpips-pytorch')})")
    _load_into(model, _load_state(path, f"LPIPS {net!r}"), str(path))
    return model


def _alexnet_backbone_state(sd: dict, source: str) -> dict:
    """Map a torchvision ``alexnet`` state dict (``features.i.*``; ``classifier.*`` ignored) onto
    the tapped layout ``net.sliceK.i.*``."""
    _, taps = alexnet_layers()
    out = {}
    for k, (a, b) in enumerate(taps, start=1):
        for i in range(a, b):
            for p in ("weight", "bias"):
                key = f"features.{i}.{p}"
                if key in sd:
                    out[f"net.slice{k}.{i}.{p}"] = sd[key]
    if not out:
        raise InputError(f"AlexNet backbone {source!r} has no 'features.<i>.weight' keys (found e.g. {sorted(sd)[:5]}); "
                         "expected a torchvision alexnet state dict")
    return out


def build_standard_alex(backbone: str | Path, heads: str | Path | None = None) -> LPIPS:
    """Standard LPIPS v0.1 (AlexNet) from a local torchvision ``alexnet`` state dict ``backbone``
    and the v0.1 linear heads ``heads`` (default: ``lpips/weights/v0.1/alex.pth`` of an installed
    ``lpips`` package; ``pip install --no-deps lpips`` avoids its torchvision dependency)."""
    if backbone is None:
        raise MissingWeightsError("standard LPIPS (net='alex') needs backbone= a local torchvision alexnet state dict "
                                  "(e.g. alexnet-owt-7be5be79.pth); meddiff never downloads it. Use net='alex-st' "
                                  "(shift-tolerant, weights in stlpips-pytorch) for a fully offline LPIPS")
    heads_path = Path(heads) if heads is not None else package_file("lpips", "weights/v0.1/alex.pth", "lpips",
                                                                    "standard LPIPS heads")
    sd = _alexnet_backbone_state(_load_state(Path(backbone), "AlexNet backbone"), str(backbone))
    head_sd = _load_state(heads_path, "LPIPS v0.1 heads")
    sd.update({k: v for k, v in head_sd.items() if k.startswith("lin")})
    model = LPIPS("alex", name=f"LPIPS v0.1 AlexNet (Zhang et al. 2018; backbone {Path(backbone).name}, "
                               f"heads {heads_path})")
    own = model.state_dict()
    sd.update({k: own[k] for k in own if k.startswith("scaling_layer.")})
    _load_into(model, sd, f"{backbone} + {heads_path}")
    return model


_CACHE: dict[tuple, LPIPS] = {}


def load_lpips(net: str = DEFAULT_NET, backbone: str | Path | None = None, heads: str | Path | None = None) -> LPIPS:
    """The LPIPS network ``net`` (cached per process, on the CPU, evaluation mode)."""
    key = (net, str(backbone) if backbone is not None else None, str(heads) if heads is not None else None)
    if key not in _CACHE:
        if net in _ST_FILES:
            _CACHE[key] = build_shift_tolerant(net)
        elif net == "alex":
            _CACHE[key] = build_standard_alex(backbone, heads)
        else:
            raise InputError(f"unknown LPIPS network {net!r}; expected one of {list(NETS)}")
    return _CACHE[key]


def lpips_name(net: str = DEFAULT_NET, backbone: str | Path | None = None, heads: str | Path | None = None) -> str:
    """Human-readable name of the LPIPS variant and weights that ``lpips_distance`` uses, for reports."""
    return load_lpips(net, backbone, heads).name


def to_rgb_batch(x: ArrayLike, name: str) -> torch.Tensor:
    """``[H, W]``, ``[B, 1, H, W]`` or ``[B, 3, H, W]`` -> float32 ``[B, 3, H, W]``; grayscale is
    replicated to 3 channels. Rejects NaN/inf and values far outside [-1, 1]."""
    t = x.detach().cpu() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    t = t.to(torch.float32)
    if t.ndim == 2:
        t = t[None, None]
    if t.ndim != 4 or t.shape[1] not in (1, 3):
        raise InputError(f"{name} must be [H, W], [B, 1, H, W] or [B, 3, H, W], got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise InputError(f"{name} contains {int((~torch.isfinite(t)).sum())} NaN/inf values")
    lo, hi = float(t.min()), float(t.max())
    if lo < -1 - _RANGE_TOL or hi > 1 + _RANGE_TOL:
        raise InputError(f"{name} spans [{lo:.4g}, {hi:.4g}]; LPIPS expects images normalised to [-1, 1]")
    return t.expand(-1, 3, -1, -1).contiguous() if t.shape[1] == 1 else t


@torch.inference_mode()
def lpips_distance(a: ArrayLike, b: ArrayLike, net: str = DEFAULT_NET, device: str | torch.device = "cpu",
                   backbone: str | Path | None = None, heads: str | Path | None = None,
                   batch_size: int = 16) -> torch.Tensor:
    """LPIPS distance per image pair (Zhang et al. 2018, eq. 1), float32 tensor ``[B]`` on the CPU.

    a, b:   ``[H, W]``, ``[B, 1, H, W]`` (grayscale, replicated to RGB) or ``[B, 3, H, W]``, in [-1, 1].
    net:    "alex-st" (default, shift-tolerant AlexNet), "vgg-st", or "alex" (standard v0.1;
            needs ``backbone=`` a local torchvision alexnet state dict, see ``build_standard_alex``).
    """
    x0, x1 = to_rgb_batch(a, "a"), to_rgb_batch(b, "b")
    if x0.shape != x1.shape:
        raise InputError(f"LPIPS inputs differ in shape: {tuple(x0.shape)} vs {tuple(x1.shape)}")
    h, w = x0.shape[-2:]
    if min(h, w) < MIN_SIZE.get(net, 32):
        raise InputError(f"LPIPS {net!r} needs images of at least {MIN_SIZE.get(net, 32)} pixels per side, got {h}x{w}")
    model = load_lpips(net, backbone, heads).to(device)
    out = [model(x0[i:i + batch_size].to(device), x1[i:i + batch_size].to(device)).cpu()
           for i in range(0, x0.shape[0], batch_size)]
    return torch.cat(out)
