"""Random inpainting masks: boxes, free-form strokes (thick random polylines) and lesion-like blobs.

A mask is a float tensor [H, W] with 1 inside holes (pixels to generate) and 0 elsewhere.
Every random number comes from the `torch.Generator` given, so a seed fixes the mask.
Masks are drawn on the generator's device (CPU by default); callers move them.
"""

from __future__ import annotations

import math

import torch

MAX_SHAPES = 200  # shapes tried per mask before giving up on reaching the target coverage


def _uniform(lo: float, hi: float, generator: torch.Generator | None, device: torch.device) -> float:
    """One draw from U(lo, hi) as a Python float."""
    u = torch.rand((), generator=generator, device=device).item()
    return lo + (hi - lo) * u


def box(h: int, w: int, scale: float, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Axis-aligned rectangle, sides U(0.1, 0.5) * scale of the image side, placed uniformly."""
    bh = max(1, round(_uniform(0.1, 0.5, generator, device) * scale * h))
    bw = max(1, round(_uniform(0.1, 0.5, generator, device) * scale * w))
    top = int(_uniform(0, h - bh + 1, generator, device)) if bh < h else 0
    left = int(_uniform(0, w - bw + 1, generator, device)) if bw < w else 0
    m = torch.zeros(h, w, device=device)
    m[top : top + bh, left : left + bw] = 1.0
    return m


def _segment_distance(yy: torch.Tensor, xx: torch.Tensor, p0: tuple[float, float], p1: tuple[float, float]) -> torch.Tensor:
    """Euclidean distance [H, W] (pixels) from every pixel centre to the segment p0-p1 (y, x)."""
    (y0, x0), (y1, x1) = p0, p1
    dy, dx = y1 - y0, x1 - x0
    length2 = dy * dy + dx * dx
    if length2 == 0.0:
        t = torch.zeros_like(yy)
    else:
        t = (((yy - y0) * dy + (xx - x0) * dx) / length2).clamp(0.0, 1.0)
    return torch.hypot(yy - (y0 + t * dy), xx - (x0 + t * dx))


def stroke(h: int, w: int, scale: float, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Free-form stroke: polyline of 2-6 segments, random turns, thickness 3-10% of the side."""
    side = min(h, w)
    yy, xx = torch.meshgrid(
        torch.arange(h, device=device, dtype=torch.float32),
        torch.arange(w, device=device, dtype=torch.float32),
        indexing="ij",
    )
    radius = max(0.75, _uniform(0.03, 0.10, generator, device) * scale * side / 2.0)
    n_seg = 2 + int(_uniform(0, 5, generator, device))
    y, x = _uniform(0, h - 1, generator, device), _uniform(0, w - 1, generator, device)
    angle = _uniform(0.0, 2.0 * math.pi, generator, device)
    dist = torch.full((h, w), float("inf"), device=device)
    for _ in range(n_seg):
        angle += _uniform(-math.pi / 2, math.pi / 2, generator, device)
        length = _uniform(0.1, 0.3, generator, device) * scale * side
        y1 = min(max(y + length * math.sin(angle), 0.0), h - 1.0)
        x1 = min(max(x + length * math.cos(angle), 0.0), w - 1.0)
        dist = torch.minimum(dist, _segment_distance(yy, xx, (y, x), (y1, x1)))
        y, x = y1, x1
    return (dist <= radius).float()


def lesion(h: int, w: int, scale: float, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Lesion-like blob: a star-shaped region r(theta) <= R (1 + sum_k a_k cos(k theta + phi_k)), k = 2..4,
    |a_k| <= 0.15 (a lobulated ellipse), mean radius R = U(0.04, 0.2) * scale of the side, random
    elongation U(1, 2) and orientation, centre placed uniformly."""
    side = min(h, w)
    yy, xx = torch.meshgrid(
        torch.arange(h, device=device, dtype=torch.float32),
        torch.arange(w, device=device, dtype=torch.float32),
        indexing="ij",
    )
    radius = max(1.0, _uniform(0.04, 0.2, generator, device) * scale * side)
    cy, cx = _uniform(0, h - 1, generator, device), _uniform(0, w - 1, generator, device)
    elong = _uniform(1.0, 2.0, generator, device)
    rot = _uniform(0.0, math.pi, generator, device)
    dy, dx = yy - cy, xx - cx
    u = dx * math.cos(rot) + dy * math.sin(rot)
    v = -dx * math.sin(rot) + dy * math.cos(rot)
    u, v = u / math.sqrt(elong), v * math.sqrt(elong)  # same area as the circle of radius R
    theta = torch.atan2(v, u)
    bound = torch.ones_like(theta)
    for k in (2, 3, 4):
        bound = bound + _uniform(-0.15, 0.15, generator, device) * torch.cos(k * theta + _uniform(0, 2 * math.pi, generator, device))
    return (torch.hypot(u, v) <= radius * bound).float()


SHAPES = {"box": box, "stroke": stroke, "lesion": lesion}


def random_mask(
    h: int,
    w: int,
    kinds: tuple[str, ...],
    coverage: tuple[float, float],
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Union of random shapes covering a fraction c ~ U(coverage) of the image, [H, W] in {0, 1}.

    Shapes (kind chosen uniformly among `kinds`) are added until the covered fraction reaches
    c; a shape that would push coverage above coverage[1] is rejected and the next shapes are
    drawn smaller (scale * 0.8), so the result lies in [coverage[0], coverage[1]] except in the
    rare case that MAX_SHAPES attempts do not reach coverage[0].
    """
    device = torch.device(device) if generator is None else generator.device
    lo, hi = coverage
    target = _uniform(lo, hi, generator, device)
    mask = torch.zeros(h, w, device=device)
    scale, covered = 1.0, 0.0
    for _ in range(MAX_SHAPES):
        if covered >= target:
            break
        kind = kinds[int(_uniform(0, len(kinds), generator, device)) % len(kinds)]
        candidate = torch.maximum(mask, SHAPES[kind](h, w, scale, generator, device))
        frac = candidate.mean().item()
        if frac > hi:
            scale *= 0.8
            continue
        mask, covered = candidate, frac
    return mask
