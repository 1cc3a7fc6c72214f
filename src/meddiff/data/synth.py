"""Synthetic training images with random contrasts (the SynthSR / SynthSeg idea).

A restoration model trained on one T1 template learns that template's contrast and texture and
paints them onto whatever it is given. Here each synthetic image draws a new "sequence":

- **brain**: the MNI152 2009a grey-matter, white-matter and CSF probability maps shipped in
  nilearn's wheel (CSF = brain mask minus GM minus WM), a random smooth deformation and affine
  (anatomy variety), a random mean intensity per tissue (so T1-like WM > GM > CSF, T2-like
  CSF > GM > WM, PD-like and FLAIR-like orders all occur) plus smooth within-tissue texture;
  partial volume comes from the probabilities themselves.
- **shapes**: random smooth label fields (softmax of smooth Gaussian random fields) with random
  intensities: edges, blobs and gradients of every scale and orientation that no anatomy
  prescribes (a model must restore what the measurement shows, not what a brain would have).

Images are [1, S, S] float32 in [-1, 1] (min/max normalised per image, as `meddiff prepare`
normalises per patient). All randomness comes from the caller's torch.Generator.
Licence of the tissue maps: the MNI/McGill notice (src/meddiff/checkpoints/README.md).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from .dataset import Pair

Tensor = torch.Tensor


@functools.lru_cache(maxsize=1)
def mni_tissue_volume() -> tuple[np.ndarray, np.ndarray]:
    """(maps [3, X, Y, Z] float32 probabilities CSF, GM, WM; brain mask [X, Y, Z]) of MNI152 2009a at
    1 mm, cropped to the brain's bounding box (+4 voxels). Needs nilearn (its wheel ships the maps;
    nothing is downloaded)."""
    try:
        from nilearn import datasets
    except ImportError:
        raise InputError("synthetic brain contrasts need nilearn (pip install nilearn): it ships the MNI152 tissue maps") from None
    gm = np.asarray(datasets.load_mni152_gm_template(resolution=1).dataobj, np.float32)
    wm = np.asarray(datasets.load_mni152_wm_template(resolution=1).dataobj, np.float32)
    t1 = np.asarray(datasets.load_mni152_template(resolution=1).dataobj, np.float32)
    gm, wm = gm / max(gm.max(), 1e-6), wm / max(wm.max(), 1e-6)
    brain = (t1 > 0.05 * t1.max()).astype(np.float32)
    csf = np.clip(brain - gm - wm, 0, 1)
    maps = np.stack([csf, gm, wm])  # [3, X, Y, Z]
    idx = np.argwhere(brain > 0)
    lo, hi = np.maximum(idx.min(0) - 4, 0), np.minimum(idx.max(0) + 5, brain.shape)
    return maps[:, lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]], brain[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]


def brain_planes(brain: np.ndarray, axis: int, min_brain: float = 0.1) -> np.ndarray:
    """Indices of the planes along `axis` whose brain fraction is at least `min_brain`."""
    other = tuple(a for a in range(3) if a != axis)
    return np.flatnonzero(brain.mean(axis=other) >= min_brain)


@functools.lru_cache(maxsize=3)
def tissue_planes(axis: int) -> tuple[np.ndarray, np.ndarray]:
    """(the MNI152 tissue maps as planes along `axis`, contiguous [D, 3, a, b]; the brain planes' indices)."""
    maps, brain = mni_tissue_volume()
    return np.ascontiguousarray(np.moveaxis(maps, axis + 1, 0)), brain_planes(brain, axis)


@functools.lru_cache(maxsize=2)
def mni_tissue_slices(size: int = 128, step: int = 2, min_brain: float = 0.1) -> np.ndarray:
    """[N, 3, size, size] float32 probabilities (CSF, GM, WM) of MNI152 2009a slices along all
    three axes every `step` mm, cropped to the brain's bounding box (+4 voxels), padded square,
    resized (anti-aliased)."""
    maps, brain = mni_tissue_volume()
    out = []
    for axis in range(3):
        for i in range(0, brain.shape[axis], step):
            if np.take(brain, i, axis=axis).mean() < min_brain:
                continue
            sl = torch.from_numpy(np.ascontiguousarray(np.take(maps, i, axis=axis + 1)))  # [3, a, b]
            a, b = sl.shape[-2:]
            s = max(a, b)
            sl = F.pad(sl, ((s - b) // 2, s - b - (s - b) // 2, (s - a) // 2, s - a - (s - a) // 2))
            out.append(F.interpolate(sl[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0])
    return torch.stack(out).clamp(0, 1).numpy()


def _rand(shape, g: torch.Generator) -> Tensor:
    return torch.rand(shape, generator=g)


def smooth_field(shape: tuple[int, int], scale: float, g: torch.Generator, channels: int = 1) -> Tensor:
    """[channels, H, W] Gaussian random field, unit std, correlation length ~ `scale` pixels
    (white noise on a coarse grid, bicubic upsampling)."""
    h, w = shape
    gh, gw = max(2, round(h / scale) + 1), max(2, round(w / scale) + 1)
    f = torch.randn((1, channels, gh, gw), generator=g)
    f = F.interpolate(f, size=(h, w), mode="bicubic", align_corners=True)[0]
    return f / f.std().clamp_min(1e-6)


def random_warp(maps: Tensor, g: torch.Generator, max_disp: float = 0.06, max_rot: float = 15.0,
                scale: tuple[float, float] = (0.85, 1.15)) -> Tensor:
    """[C, H, W] -> [C, H, W]: random rotation, scaling and a smooth elastic displacement (up to
    `max_disp` of the image side), bilinear."""
    c, h, w = maps.shape
    ang = math.radians((float(_rand((), g)) * 2 - 1) * max_rot)
    s = scale[0] + (scale[1] - scale[0]) * float(_rand((), g))
    theta = torch.tensor([[math.cos(ang) / s, -math.sin(ang) / s, 0.0], [math.sin(ang) / s, math.cos(ang) / s, 0.0]])
    grid = F.affine_grid(theta[None], [1, c, h, w], align_corners=False)
    disp = smooth_field((h, w), h / 4, g, channels=2).permute(1, 2, 0)[None] * max_disp * float(_rand((), g))
    return F.grid_sample(maps[None], grid + disp, mode="bilinear", padding_mode="zeros", align_corners=False)[0]


def render(probs: Tensor, means: Tensor, texture: Tensor, g: torch.Generator) -> Tensor:
    """Image sum_k p_k (mu_k + tau_k * smooth noise_k) from probabilities [K, H, W] (need not sum to 1:
    the rest is background 0), means [K], texture stds [K] -> [1, H, W] in [-1, 1] (min/max)."""
    return render_stack(probs[None], means, texture, g)


def render_stack(probs: Tensor, means: Tensor, texture: Tensor, g: torch.Generator) -> Tensor:
    """`render` for the planes of a stack, probabilities [N, K, H, W] -> [N, H, W]: one texture field for
    every plane and one min/max over the stack, so neighbouring planes keep their relation."""
    k, h, w = probs.shape[-3:]
    tex = smooth_field((h, w), 3.0, g, channels=k) * texture[:, None, None]
    img = (probs * (means[:, None, None] + tex)).sum(-3).clamp_min(0)
    lo, hi = img.min(), img.max()
    return (img - lo) / (hi - lo).clamp_min(1e-6) * 2 - 1


def synth_brain(tissue: np.ndarray, g: torch.Generator) -> Tensor:
    """One random-contrast brain slice [1, S, S] from tissue probability slices [N, 3, S, S]."""
    i = int(_rand((), g) * len(tissue)) % len(tissue)
    probs = random_warp(torch.from_numpy(np.array(tissue[i])), g)
    means = _rand((3,), g) * 0.9 + 0.1  # CSF, GM, WM: any order -> T1-, T2-, PD-, FLAIR-like
    return render(probs, means, _rand((3,), g) * 0.06, g)


def synth_brain_stack(planes: int, stride: int, g: torch.Generator | None, window: int = 0) -> Tensor:
    """A random-contrast stack [planes, A, B] of MNI152 tissue planes `stride` mm apart (1 mm voxels),
    centred on a random brain plane along a random axis; one warp, one contrast for every plane.
    window > 0: only a random window of at most that side is warped and rendered (training crops)."""
    axis = int(_rand((), g) * 3) % 3
    along, centres = tissue_planes(axis)
    z = int(centres[int(_rand((), g) * len(centres)) % len(centres)])
    k = planes // 2
    idx = np.clip(z + stride * (np.arange(planes) - k), 0, along.shape[0] - 1)
    stack = torch.from_numpy(along[idx])  # [N, 3, a, b]
    if window > 0:
        top = int(_rand((), g) * max(stack.shape[-2] - window + 1, 1))
        left = int(_rand((), g) * max(stack.shape[-1] - window + 1, 1))
        stack = stack[..., top : top + window, left : left + window]
    n, c, a, b = stack.shape
    probs = random_warp(stack.reshape(n * c, a, b), g).reshape(n, c, a, b)
    return render_stack(probs, _rand((3,), g) * 0.9 + 0.1, _rand((3,), g) * 0.06, g)


def synth_shapes(size: int, g: torch.Generator) -> Tensor:
    """One image [1, size, size] of random smooth regions with random intensities."""
    k = 2 + int(_rand((), g) * 5)
    scale = size / (2 + 10 * float(_rand((), g)))
    fields = smooth_field((size, size), scale, g, channels=k)
    sharp = 2 + 20 * float(_rand((), g))  # soft (partial volume) to crisp edges
    probs = torch.softmax(fields * sharp, dim=0)
    if _rand((), g) < 0.5:  # an object on a dark background, as most scans are
        obj = torch.sigmoid(smooth_field((size, size), size / 3, g)[0] * 6 + 3 * float(_rand((), g)))
        probs = probs * obj
    return render(probs, _rand((k,), g), _rand((k,), g) * 0.06, g)


class MixedPairs(torch.utils.data.Dataset):
    """Training pairs from a real PairDataset, a `fraction` of them replaced by synthetic images
    (of which `shapes` are random label fields, the rest random-contrast brains), each passed
    through `appearance` (x0 -> x0, or None) and the real set's degradation.

    Same length and randomness contract as PairDataset(train=True): every access draws fresh
    randomness from torch's global RNG, so `torch.manual_seed` makes a run reproducible.
    """

    def __init__(self, real, *, fraction: float = 0.0, shapes: float = 0.5, appearance=None, size: int | None = None):
        if not 0.0 <= fraction <= 1.0 or not 0.0 <= shapes <= 1.0:
            raise InputError(f"augment.synth_fraction / synth_shapes: expected fractions in [0, 1], got {fraction}, {shapes}")
        self.real, self.fraction, self.shapes, self.appearance = real, fraction, shapes, appearance
        self.size = int(size or real.array.shape[-1])
        self.tissue = mni_tissue_slices(self.size) if fraction > 0 and shapes < 1 else None
        self.prepared, self.array = real.prepared, real.array  # what the trainer reads from a dataset

    def __len__(self) -> int:
        return len(self.real)

    def __getitem__(self, index: int) -> Pair:
        g = self.real.generator_for(index)
        if self.fraction > 0 and float(_rand((), g)) < self.fraction:
            x0 = synth_shapes(self.size, g) if float(_rand((), g)) < self.shapes else synth_brain(self.tissue, g)
            case = "synthetic"
        else:
            index = index % len(self.real)
            x0 = torch.from_numpy(np.array(self.real.array[index], dtype=np.float32))[None]
            case = self.real.prepared.rows[self.real.split][index]["case_id"]
        x0 = self.real._crop_and_flip(x0, g)
        if self.appearance is not None:
            x0 = self.appearance(x0[None], generator=g)[0]
        cond, mask = self.real.degradation(x0[None], generator=g)
        return Pair(x0.contiguous(), cond[0], mask[0], case)
