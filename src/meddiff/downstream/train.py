"""Training of the downstream models (seeded, one CPU thread): augmentation, loops, held-out scores.

Augmentation, drawn per image from one ``torch.Generator``:
  intensity  u = (x + 1) / 2, u' = s * u ** g with g ~ U(0.7, 1.5), s ~ U(0.85, 1.0), back to [-1, 1]
  geometry   zoom z ~ U(0.9, 1.1) and shift up to 6 pixels (affine grid; image bilinear with -1
             outside, labels nearest with 0 outside), left-right flip with probability 1/2
Optimiser: AdamW, cosine learning-rate decay to 5% with 20 warm-up steps, cross-entropy loss.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .metrics import accuracy, dice


@dataclass(frozen=True)
class Recipe:
    steps: int = 600
    batch: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    crop: int = 96  # training crop side (0: whole image) for the first crop_fraction of the steps
    crop_fraction: float = 0.7
    seed: int = 0
    gamma: tuple[float, float] = (0.7, 1.5)
    scale: tuple[float, float] = (0.85, 1.0)
    zoom: tuple[float, float] = (0.9, 1.1)
    shift_px: int = 6

    def to_dict(self) -> dict:
        return asdict(self)


def _u(n: int, lo: float, hi: float, g: torch.Generator) -> Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def augment(x: Tensor, y: Tensor | None, r: Recipe, g: torch.Generator) -> tuple[Tensor, Tensor | None]:
    """Random intensity gamma/scale, zoom, shift and left-right flip of x [B, 1, H, W] (and labels y [B, H, W])."""
    b, _, h, w = x.shape
    gamma, scale = _u(b, *r.gamma, g), _u(b, *r.scale, g)
    u = ((x + 1) / 2).clamp(0, 1) ** gamma.view(b, 1, 1, 1) * scale.view(b, 1, 1, 1)
    x = 2 * u - 1
    zoom = _u(b, *r.zoom, g)
    flip = torch.where(torch.rand(b, generator=g) < 0.5, -1.0, 1.0)
    shift = (torch.rand(b, 2, generator=g) * 2 - 1) * r.shift_px
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = flip / zoom
    theta[:, 1, 1] = 1 / zoom
    theta[:, 0, 2] = shift[:, 0] * 2 / w
    theta[:, 1, 2] = shift[:, 1] * 2 / h
    grid = F.affine_grid(theta, (b, 1, h, w), align_corners=False)
    x = F.grid_sample(x + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1
    if y is not None:
        y = F.grid_sample(y[:, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)[:, 0].long()
    return x, y


def random_crop(x: Tensor, y: Tensor | None, side: int, g: torch.Generator) -> tuple[Tensor, Tensor | None]:
    """One random side x side window per batch (same place for every image)."""
    h, w = x.shape[-2:]
    i = int(torch.randint(0, h - side + 1, (1,), generator=g))
    j = int(torch.randint(0, w - side + 1, (1,), generator=g))
    return x[..., i:i + side, j:j + side], None if y is None else y[..., i:i + side, j:j + side]


def lr_at(step: int, r: Recipe) -> float:
    """Linear warm-up for 20 steps, then cosine decay from lr to 0.05 lr."""
    if step < 20:
        return r.lr * (step + 1) / 20
    t = (step - 20) / max(r.steps - 20, 1)
    return r.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))


def train_model(net: torch.nn.Module, images: np.ndarray, targets: np.ndarray, r: Recipe, dense: bool,
                log_every: int = 50) -> list[float]:
    """Train ``net`` on images [N, H, W] in [-1, 1] with targets [N, H, W] (dense) or [N]; returns the loss curve."""
    torch.manual_seed(r.seed)
    g = torch.Generator().manual_seed(r.seed)
    opt = torch.optim.AdamW(net.parameters(), lr=r.lr, weight_decay=r.weight_decay)
    xs, ts = torch.from_numpy(images)[:, None].float(), torch.from_numpy(targets).long()
    losses: list[float] = []
    t0 = time.perf_counter()
    net.train()
    for step in range(r.steps):
        idx = torch.randint(0, xs.shape[0], (r.batch,), generator=g)
        x, t = xs[idx], ts[idx]
        x, y = augment(x, t if dense else None, r, g)
        if dense:
            t = y  # type: ignore[assignment]
            if r.crop and step < r.crop_fraction * r.steps:
                x, t = random_crop(x, t, r.crop, g)  # type: ignore[assignment]
        for group in opt.param_groups:
            group["lr"] = lr_at(step, r)
        loss = F.cross_entropy(net(x), t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if log_every and (step % log_every == 0 or step == r.steps - 1):
            print(f"step {step:5d}  loss {np.mean(losses[-log_every:]):.4f}  {time.perf_counter() - t0:6.1f} s", flush=True)
    net.eval()
    return losses


@torch.no_grad()
def predict_batches(fn, images: np.ndarray, batch: int = 32) -> Tensor:
    """fn over images [N, H, W] in batches of [b, 1, H, W]; outputs concatenated."""
    xs = torch.from_numpy(np.ascontiguousarray(images))[:, None].float()
    return torch.cat([fn(xs[i:i + batch]) for i in range(0, xs.shape[0], batch)])


def heldout_dice(seg, images: np.ndarray, labels: np.ndarray) -> Tensor:
    """Dice [N, 2] (grey, white matter) of the segmenter on images against the tissue labels."""
    return dice(predict_batches(seg, images), torch.from_numpy(labels), seg.n_classes, ignore=(0,))


def heldout_accuracy(clf, images: np.ndarray, labels: np.ndarray) -> float:
    return accuracy(predict_batches(clf, images), torch.from_numpy(labels))
