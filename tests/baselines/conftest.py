"""Real data for the baseline tests: a 32x32 crop of a shipped MNI152 slice, and tiny configs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from meddiff import config as config_mod
from meddiff.data.samples import samples_dir
from meddiff.io import read_volume

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from train.conftest import train  # noqa: E402,F401  (the one helper: the family `meddiff train` picks)


def mni_crop(size: int = 32, index: int = 33) -> torch.Tensor:
    """[1, 1, size, size] in [-1, 1]: the centre of axial slice `index` of the MNI152 template
    (min/max of the whole stack mapped to [-1, 1], as `meddiff prepare` normalises a patient)."""
    vol = read_volume(samples_dir("mni152") / "icbm152_2009a" / "axial.nii.gz")
    a = vol.array.astype(np.float64)
    lo, hi = a.min(), a.max()
    s = a[index]
    h, w = s.shape
    crop = s[h // 2 - size // 2: h // 2 + size // 2, w // 2 - size // 2: w // 2 + size // 2]
    x = torch.from_numpy((crop - lo) / (hi - lo) * 2 - 1).float()[None, None]
    assert x.std() > 0.1  # real structure, not background
    return x


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB for images in [-1, 1] (peak-to-peak 2)."""
    return float(10 * torch.log10(4.0 / (a - b).square().mean()))


class Pair(NamedTuple):
    x0: torch.Tensor
    cond: torch.Tensor
    mask: torch.Tensor
    case_id: str


class NoisyCrops(Dataset):
    """n 16x16 crops of MNI152 slices; the condition is a noisy copy drawn from torch's global RNG
    (as a degradation called with generator=None), so data randomness goes through the trainer's seeds."""

    def __init__(self, n: int = 8):
        self.x0 = torch.cat([mni_crop(16, 25 + 3 * i) for i in range(n)])

    def __len__(self) -> int:
        return self.x0.shape[0]

    def __getitem__(self, i: int) -> Pair:
        x0 = self.x0[i]
        return Pair(x0, (x0 + 0.1 * torch.randn(x0.shape)).clamp(-1, 1), torch.ones_like(x0), f"case{i % 3}")


TINY = {
    "pix2pix": {"name": "pix2pix", "width": 8, "disc_width": 8, "depth": 4, "disc_layers": 2},
    "srgan": {"name": "srgan", "width": 8, "n_blocks": 2, "disc_width": 4, "pretrain_steps": 2},
}


def tiny_baseline_config(out_dir, name: str = "pix2pix", task: str = "denoise", **train):
    return config_mod.from_dict({
        "objective": "baseline",
        "task": {"kind": task},
        "baseline": TINY[name],
        "train": {"out_dir": str(out_dir), "steps": 6, "batch_size": 3, "lr": 1e-3, "betas": [0.5, 0.999],
                  "ema_decay": 0.9, "log_every": 1, "ckpt_every": 3, "keep_last": 2, "device": "cpu", "threads": 1,
                  "warmup_steps": 2, **train},
    })


@pytest.fixture(scope="session")
def crop32() -> torch.Tensor:
    return mni_crop(32)
