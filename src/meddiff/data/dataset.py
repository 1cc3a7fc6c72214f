"""Reading the cache written by `meddiff prepare`, and the (x0, cond, mask) training pairs.

    prep = load_prepared("runs/prepared")
    ds = PairDataset(prep, "train", build_degradation(cfg.task), crop=0, train=True)
    x0, cond, mask, case_id = ds[0]             # [1, H, W] float32 each, case_id: str
    loader = DataLoader(ds, batch_size=16)      # default_collate -> [B, 1, H, W], list of str
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple

import numpy as np
import torch

from ..errors import InputError
from .normalise import Normalisation
from .slices import SliceGeometry
from .split import SPLITS


class Pair(NamedTuple):
    """One training/test example. Tensors are [1, H, W] float32 in [-1, 1] (mask in {0, 1})."""

    x0: torch.Tensor  # clean target
    cond: torch.Tensor  # degraded measurement (model condition, with mask for inpainting)
    mask: torch.Tensor  # 1 where the model must generate pixels
    case_id: str  # e.g. "colin27_axial_ax0_0012" (manifest.csv column case_id)


@dataclass(frozen=True)
class Prepared:
    """A prepared folder: slices per split, one manifest row per slice, per-patient normalisation.

    arrays[split]:  float32 [N, size, size] in [-1, 1], memory-mapped read-only
    rows[split]:    manifest rows (dicts of strings) of that split, row k describes `arrays[split][k]`
    normalisation:  patient_id -> Normalisation (to map outputs back to original units)
    info:           contents of prepare.json (options used, splits, counts)
    """

    root: Path
    arrays: Mapping[str, np.ndarray]
    rows: Mapping[str, tuple[dict[str, str], ...]]
    normalisation: Mapping[str, Normalisation]
    info: Mapping[str, Any]

    def row(self, split: str, index: int) -> dict[str, str]:
        return self.rows[split][index]

    def normalisation_of(self, split: str, index: int) -> Normalisation:
        """The patient's Normalisation of slice `index` of `split`."""
        return self.normalisation[self.rows[split][index]["patient_id"]]

    def geometry_of(self, split: str, index: int) -> SliceGeometry:
        """Pad/resize geometry of a slice (SliceGeometry.restore maps [size, size] back)."""
        r = self.rows[split][index]
        keys = ("height", "width", "pad_top", "pad_bottom", "pad_left", "pad_right", "size")
        return SliceGeometry(*(int(r[k]) for k in keys))


def _open_split(path: Path) -> np.ndarray:
    """A split's slices memory-mapped: float32 [N, size, size]; anything else is an InputError naming the file."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as e:  # not an .npy file, truncated, pickled objects
        raise InputError(f"{path}: cannot read as a prepared split ({type(e).__name__}: {' '.join(str(e).split())[:160]}); "
                         "expected the float32 .npy `meddiff prepare` writes (run it again)") from None
    if not isinstance(arr, np.ndarray) or arr.ndim != 3 or arr.dtype.kind != "f":
        raise InputError(f"{path}: holds {getattr(arr, 'dtype', type(arr).__name__)} of shape {getattr(arr, 'shape', '?')}; "
                         "expected float32 slices [N, size, size] as `meddiff prepare` writes")
    return arr


def load_prepared(prepared_dir: str | Path) -> Prepared:
    """Open a folder written by `meddiff prepare` (arrays are memory-mapped, not read)."""
    root = Path(prepared_dir)
    needed = [root / f for f in ("manifest.csv", "normalisation.json", *(f"{s}.npy" for s in SPLITS))]
    missing = [p.name for p in needed if not p.is_file()]
    if missing:
        raise InputError(f"{root} is not a prepared folder (missing {', '.join(missing)}); run `meddiff prepare` first")
    arrays = {s: _open_split(root / f"{s}.npy") for s in SPLITS}
    with open(root / "manifest.csv", newline="") as f:
        all_rows = list(csv.DictReader(f))
    if all_rows and not {"split", "index", "patient_id"} <= set(all_rows[0]):
        raise InputError(f"{root / 'manifest.csv'}: columns {sorted(all_rows[0])[:8]}; expected those `meddiff prepare` "
                         "writes (split, index, case_id, patient_id, ...)")
    rows = {s: tuple(r for r in all_rows if r["split"] == s) for s in SPLITS}
    for s in SPLITS:
        if len(rows[s]) != arrays[s].shape[0] or any(int(r["index"]) != k for k, r in enumerate(rows[s])):
            raise InputError(f"{root}: manifest.csv has {len(rows[s])} rows for {s!r} but {s}.npy has {arrays[s].shape[0]} slices")
    doc = json.loads((root / "normalisation.json").read_text())
    norms = {p: Normalisation.from_dict(d) for p, d in doc["patients"].items()}
    info_path = root / "prepare.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    return Prepared(root, arrays, rows, norms, info)


class PairDataset(torch.utils.data.Dataset):
    """Pairs (x0, cond, mask, case_id) from one split of a prepared folder.

    degradation: callable x0 [B, 1, H, W] -> (cond, mask), e.g. `build_degradation(cfg.task)`.
    crop:  if > 0, square crops of this side (random when train, centred otherwise).
    train: True -> fresh randomness at every access, drawn from torch's global RNG (which
           DataLoader seeds per worker, so `torch.manual_seed` makes a run reproducible);
           False -> deterministic: item i always uses torch.Generator().manual_seed(seed + i).
    flips: random left-right flips when training (off by default: anatomy has a side).
    """

    def __init__(
        self,
        prepared_dir: str | Path | Prepared,
        split: str,
        degradation: Callable[..., tuple[torch.Tensor, torch.Tensor]],
        *,
        crop: int = 0,
        train: bool = True,
        seed: int = 0,
        flips: bool = False,
    ) -> None:
        self.prepared = prepared_dir if isinstance(prepared_dir, Prepared) else load_prepared(prepared_dir)
        if split not in SPLITS:
            raise InputError(f"split: expected one of {SPLITS}, got {split!r}")
        self.split, self.degradation = split, degradation
        self.array = self.prepared.arrays[split]
        if len(self.array) == 0:
            raise InputError(f"split {split!r} of {self.prepared.root} is empty (see prepare.json: too few patients?)")
        size = self.array.shape[-1]
        if crop < 0 or crop > size:
            raise InputError(f"crop: expected 0..{size} (slice size), got {crop}")
        self.crop, self.train, self.seed, self.flips = crop, train, seed, flips

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def generator_for(self, index: int) -> torch.Generator:
        """The generator item `index` draws from (fixed for train=False, fresh for train=True)."""
        if self.train:
            return torch.Generator().manual_seed(int(torch.randint(0, 2**62, ()).item()))
        return torch.Generator().manual_seed(self.seed + index)

    def __getitem__(self, index: int) -> Pair:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} slices of split {self.split!r}")
        index = index % len(self)
        g = self.generator_for(index)
        x0 = torch.from_numpy(np.array(self.array[index], dtype=np.float32))[None]
        x0 = self._crop_and_flip(x0, g)
        cond, mask = self.degradation(x0[None], generator=g)
        return Pair(x0, cond[0], mask[0], self.prepared.rows[self.split][index]["case_id"])

    def _crop_and_flip(self, x0: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        size = x0.shape[-1]
        if self.crop and self.crop < size:
            if self.train:
                top, left = (int(v) for v in torch.randint(0, size - self.crop + 1, (2,), generator=g))
            else:
                top = left = (size - self.crop) // 2
            x0 = x0[:, top : top + self.crop, left : left + self.crop]
        if self.train and self.flips and torch.rand((), generator=g).item() < 0.5:
            x0 = x0.flip(-1)
        return x0.contiguous()
