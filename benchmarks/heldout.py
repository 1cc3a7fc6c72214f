"""Held-out real images for judging restoration models on data they never saw.

Every source here is real (no synthetic image) and comes from a package installed offline; none
of them is used to train the shipped models (those train on MNI152 2009a only: its T1 slices and
its GM/WM/CSF maps). Each source gives 2D ground-truth images in [-1, 1] (min/max per volume or
image, as `meddiff sample` normalises by default) and, where the source is a volume, the stack
for the through-plane measure.

| name | what | from |
|---|---|---|
| colin27_t1 | Colin27 T1 (one person, average of 27 scans; template-like), axial, 3 mm apart | meddiff samples (Debian mricron-data) |
| epi_t2star | a real T2*-weighted EPI brain volume (128x96x24, 2 x 2 x 2.2 mm), axial | nibabel test data example4d.nii.gz, frame 0 |
| mr_t2_se | a real T2-weighted spin echo (TE 240 ms, TR 4000 ms; Toshiba), 64x64 | pydicom test file MR_small.dcm |
| mr_emri | a real multi-frame MR (64x64x10) | pydicom-data emri_small.dcm |
| mr_shoulder_t1 | a real T1 spin-echo shoulder (TE 27, TR 350; Philips), 1024^2 -> 256^2, 128^2 tiles | pydicom-data MR2_UNCR.dcm |
| mr_abdomen_gre | a real gradient-echo abdomen (TE 2.8, TR 5.5; Siemens), 484^2 -> 256^2, 128^2 tiles | pydicom-data MR-SIEMENS-DICOM-WithOverlays.dcm |
| ct_small | a real CT slice (GE), 128x128 | pydicom test file CT_small.dcm |
| ct_head | a real head CT (5 mm), 512^2 -> 256^2, 128^2 tiles | pydicom-data 693_UNCR.dcm |

Large images are resampled (anti-aliased) to 256^2 and cut into 128^2 tiles (keeping tiles with
foreground): the texture is real, the size matches what the CPU budget can sample per image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class Source:
    name: str
    contrast: str  # "T1", "T2*", "T2", "GRE", "CT", ...
    images: list[np.ndarray]  # [H, W] float32 in [-1, 1], H and W multiples of 4
    volume: np.ndarray | None = None  # [Z, H, W] in [-1, 1] for the through-plane measure (or None)


def _norm(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    lo, hi = float(a.min()), float(a.max())
    return ((a - lo) / max(hi - lo, 1e-12) * 2 - 1).astype(np.float32)


def _crop4(a: np.ndarray) -> np.ndarray:
    h, w = a.shape[-2:]
    return np.ascontiguousarray(a[..., : h - h % 4, : w - w % 4])


def _resize(a: np.ndarray, size: int) -> np.ndarray:
    t = torch.from_numpy(a.astype(np.float32))[None, None]
    return F.interpolate(t, size=(size, size), mode="bicubic", antialias=True, align_corners=False)[0, 0].numpy()


def _tiles(a: np.ndarray, tile: int = 128, min_fg: float = 0.3) -> list[np.ndarray]:
    out = []
    for i in range(0, a.shape[0] - tile + 1, tile):
        for j in range(0, a.shape[1] - tile + 1, tile):
            t = a[i : i + tile, j : j + tile]
            if (t > -0.9).mean() >= min_fg:
                out.append(np.ascontiguousarray(t))
    return out


def _dicom(name: str) -> np.ndarray:
    from pydicom.data import get_testdata_file

    from meddiff.io import read_volume

    path = get_testdata_file(name)
    if path is None:
        raise FileNotFoundError(f"{name}: not found in pydicom's test files or pydicom-data")
    return read_volume(path).array.astype(np.float32)


def _large(name: str, contrast: str, key: str) -> Source:
    a = _dicom(key)
    a = a if a.ndim == 2 else a[a.shape[0] // 2]
    s = min(a.shape)
    a = a[(a.shape[0] - s) // 2 : (a.shape[0] - s) // 2 + s, (a.shape[1] - s) // 2 : (a.shape[1] - s) // 2 + s]
    return Source(name, contrast, _tiles(_norm(_resize(a, 256))))


def colin27(n: int = 12) -> Source:
    from meddiff.data.samples import samples_dir
    from meddiff.io import read_volume

    v = _crop4(_norm(read_volume(samples_dir("colin27") / "colin27" / "axial.nii.gz").array))
    idx = np.linspace(0.2, 0.8, n) * (len(v) - 1)
    mid = v[len(v) // 2 - 8 : len(v) // 2 + 8]
    return Source("colin27_t1", "T1", [v[int(round(i))] for i in idx], mid)


def epi(n: int = 12) -> Source:
    import nibabel as nib
    from nibabel.testing import data_path

    a = np.asarray(nib.load(f"{data_path}/example4d.nii.gz").dataobj, np.float32)[..., 0]  # [X, Y, Z]
    v = _crop4(_norm(np.transpose(a, (2, 1, 0))[:, ::-1]))  # [Z, Y, X], anterior up
    keep = [z for z in range(len(v)) if (v[z] > -0.8).mean() > 0.15]
    idx = np.linspace(0, len(keep) - 1, min(n, len(keep))).round().astype(int)
    return Source("epi_t2star", "T2*", [v[keep[i]] for i in idx], v[keep[0] : keep[-1] + 1])


def all_sources(n: int = 12) -> list[Source]:
    """Every held-out source (see the module table)."""
    mr_small = _crop4(_norm(_dicom("MR_small.dcm")))
    emri = _crop4(_norm(_dicom("emri_small.dcm")))
    ct_small = _crop4(_norm(_dicom("CT_small.dcm")))
    return [
        colin27(n),
        epi(n),
        Source("mr_t2_se", "T2", [mr_small]),
        Source("mr_emri", "MR", [emri[i] for i in range(0, len(emri), 2)], emri),
        _large("mr_shoulder_t1", "T1 SE", "MR2_UNCR.dcm"),
        _large("mr_abdomen_gre", "GRE", "MR-SIEMENS-DICOM-WithOverlays.dcm"),
        Source("ct_small", "CT", [ct_small]),
        _large("ct_head", "CT", "693_UNCR.dcm"),
    ]
