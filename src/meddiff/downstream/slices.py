"""Labelled 2D brain slices for training and testing the downstream models.

Slices are cut like the shipped samples (scripts/make_samples.py): the brain's bounding box
(voxels above 5% of the maximum, plus 4 voxels) of a RAS+ 1 mm volume, each slice upright
(top row = superior; anterior for axial slices), then prepared like `meddiff prepare`: one
min/max window per volume to [-1, 1] (:class:`meddiff.data.normalise.Normalisation`), padded
to square with -1 and resized to 128 x 128 (:func:`meddiff.data.slices.to_model_slice`).

Tissue labels (MNI152 2009a only, the one volume with tissue maps here): with gm, wm the
template's grey- and white-matter probability maps in [0, 1] (padded with 0 and resized like
the image), label = argmax of (1 - gm - wm, gm, wm): 0 = other/background (CSF, skull-stripped
background, everything else: no CSF map ships), 1 = grey matter, 2 = white matter.

Reading the MNI152 files needs nibabel and the nilearn wheel (training only); the shipped
Colin27 stacks are read through meddiff.io.
"""

from __future__ import annotations

import glob
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.normalise import Normalisation
from ..data.slices import pad_to_square, resize, to_model_slice
from ..errors import InputError

ORIENTATIONS = ("axial", "coronal", "sagittal")
TISSUE_CLASSES = ("other", "grey_matter", "white_matter")
LEVEL_CLASSES = ("inferior", "middle", "superior")
MNI_FILE = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"
FG_LEVEL = 0.05  # bounding box and slice foreground: voxels above 5% of the maximum (as make_samples.py)
MARGIN = 4
MIN_FOREGROUND = 0.10  # slices kept: at least 10% of their voxels above FG_LEVEL (as make_samples.py)
SIZE = 128


@dataclass
class SliceSet:
    """Prepared slices with their labels and where they came from.

    images: float32 [N, SIZE, SIZE] in [-1, 1]; tissue: int64 [N, SIZE, SIZE] (or None);
    orientation: int64 [N] index into ORIENTATIONS; level: int64 [N] index into LEVEL_CLASSES
    (-1 for non-axial slices); position: float64 [N], the slice's place along its axis as a
    fraction of the kept range (0 = first kept slice, 1 = last).
    """

    images: np.ndarray
    tissue: np.ndarray | None
    orientation: np.ndarray
    level: np.ndarray
    position: np.ndarray

    def subset(self, keep: np.ndarray) -> "SliceSet":
        return SliceSet(self.images[keep], None if self.tissue is None else self.tissue[keep],
                        self.orientation[keep], self.level[keep], self.position[keep])


def nilearn_data_dir() -> Path:
    """nilearn's bundled data folder, found without importing nilearn."""
    import importlib.util

    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        hits = glob.glob(str(Path(sys.prefix) / "lib" / "python3*" / "site-packages" / "nilearn"))
        if not hits:
            raise InputError("the MNI152 2009a tissue maps come with nilearn (pip install nilearn, the 'dev' extra); "
                             "it is needed to train the downstream models, not to use them")
        return Path(hits[0]) / "datasets" / "data"
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


def upright(vol: np.ndarray, orientation: str, index: int) -> np.ndarray:
    """Slice ``index`` of a RAS+ [i, j, k] array, upright: rows from superior (anterior for axial) down."""
    if orientation == "axial":
        return vol[:, :, index].T[::-1]  # columns i (left -> right), rows j descending
    if orientation == "coronal":
        return vol[:, index, :].T[::-1]  # columns i, rows k descending
    return vol[index, :, :].T[::-1]  # sagittal: columns j (posterior -> anterior), rows k descending


STACK_AXIS = {"axial": 2, "coronal": 1, "sagittal": 0}


def brain_box(t1: np.ndarray) -> tuple[slice, slice, slice]:
    """Bounding box of voxels above FG_LEVEL * max, widened by MARGIN voxels (as scripts/make_samples.py)."""
    idx = np.argwhere(t1 > FG_LEVEL * t1.max())
    lo = np.maximum(idx.min(0) - MARGIN, 0)
    hi = np.minimum(idx.max(0) + MARGIN, np.array(t1.shape) - 1)
    return tuple(slice(int(a), int(b) + 1) for a, b in zip(lo, hi))  # type: ignore[return-value]


def kept_indices(t1: np.ndarray, orientation: str) -> list[int]:
    """Slice indices along ``orientation`` whose foreground fraction is at least MIN_FOREGROUND."""
    fg = t1 > FG_LEVEL * t1.max()
    axis = STACK_AXIS[orientation]
    frac = fg.mean(axis=tuple(a for a in range(3) if a != axis))
    return [int(i) for i in np.flatnonzero(frac >= MIN_FOREGROUND)]


def level_of(position: float) -> int:
    """Axial level from the relative position in the kept range: 0 inferior (< 1/3), 1 middle, 2 superior (>= 2/3)."""
    return int(min(2, np.floor(3 * position)))


def tissue_label(gm: np.ndarray, wm: np.ndarray) -> np.ndarray:
    """argmax over (1 - gm - wm, gm, wm) of probability maps in [0, 1]: 0 other, 1 grey, 2 white matter."""
    return np.argmax(np.stack([1.0 - gm - wm, gm, wm]), axis=0).astype(np.int64)


def _prob_slice(p: np.ndarray) -> np.ndarray:
    padded, _ = pad_to_square(p.astype(np.float32), 0.0)
    return resize(padded, SIZE)


def slice_volume(t1: np.ndarray, gm: np.ndarray | None = None, wm: np.ndarray | None = None,
                 step: int = 1, orientations: tuple[str, ...] = ORIENTATIONS) -> SliceSet:
    """Every ``step``-th kept slice of a RAS+ 1 mm volume (and its tissue labels if gm, wm are given)."""
    box = brain_box(t1)
    norm = Normalisation.from_arrays([t1[box]], name="volume")
    vol = np.asarray(norm.forward(t1[box].astype(np.float32)), dtype=np.float32)
    cropped = t1[box]
    maps = None if gm is None or wm is None else (gm[box], wm[box])
    images, tissue, orient, level, pos = [], [], [], [], []
    for o, name in enumerate(orientations):
        kept = kept_indices(cropped, name)
        first, last = kept[0], kept[-1]
        for i in range(first, last + 1, step):
            images.append(to_model_slice(np.ascontiguousarray(upright(vol, name, i)), SIZE)[0])
            p = (i - first) / max(last - first, 1)
            orient.append(ORIENTATIONS.index(name))
            pos.append(p)
            level.append(level_of(p) if name == "axial" else -1)
            if maps is not None:
                g, w = (_prob_slice(np.ascontiguousarray(upright(m, name, i))) for m in maps)
                tissue.append(tissue_label(g, w))
    return SliceSet(np.stack(images).astype(np.float32), np.stack(tissue) if tissue else None,
                    np.asarray(orient, np.int64), np.asarray(level, np.int64), np.asarray(pos, np.float64))


def load_mni152(step: int = 1) -> SliceSet:
    """MNI152 2009a T1 slices (all three orientations) with tissue labels, from the nilearn wheel."""
    import nibabel as nib

    d = nilearn_data_dir()
    arrays = []
    for n in ("t1", "gm", "wm"):
        path = d / MNI_FILE.format(n)
        if not path.is_file():
            raise InputError(f"{path}: missing; expected the MNI152 2009a {n} map of the nilearn wheel")
        arrays.append(np.asarray(nib.load(str(path)).dataobj, dtype=np.float32))
    t1, gm, wm = arrays
    return slice_volume(t1, gm / 255.0, wm / 255.0, step=step)


def holdout_mask(s: SliceSet, lo: float = 0.4, hi: float = 0.6) -> np.ndarray:
    """True for held-out slices: the contiguous slab lo <= position < hi of every orientation.

    The central slab of the sagittal axis contains the midline, so the mirror image of every
    held-out sagittal slice (the template is left-right symmetric) is held out too.
    """
    return (s.position >= lo) & (s.position < hi)


def gap_mask(s: SliceSet, lo: float = 0.4, hi: float = 0.6, gap: float = 0.03) -> np.ndarray:
    """True for slices within ``gap`` of the held-out slab (left out of training and testing)."""
    return ((s.position >= lo - gap) & (s.position < lo)) | ((s.position >= hi) & (s.position < hi + gap))


def load_colin27_samples() -> SliceSet:
    """The shipped Colin27 stacks (src/meddiff/data/samples/colin27), prepared like `meddiff prepare`.

    One min/max window over the three stacks (one patient), pad to square, 128 x 128. Axial
    level from the slice's place in the axial stack (the stack holds exactly the slices with
    >= 10% foreground, every 3 mm; 0 = first, 1 = last). No tissue labels.
    """
    from ..data.samples import samples_dir
    from ..io import read_volume

    folder = Path(samples_dir("colin27")) / "colin27"
    vols = {o: np.asarray(read_volume(folder / f"{o}.nii.gz").array, dtype=np.float32) for o in ORIENTATIONS}
    norm = Normalisation.from_arrays(list(vols.values()), name="colin27")
    images, orient, level, pos = [], [], [], []
    for o, name in enumerate(ORIENTATIONS):
        stack = np.asarray(norm.forward(vols[name]), dtype=np.float32)
        n = stack.shape[0]
        for i in range(n):
            images.append(to_model_slice(stack[i], SIZE)[0])
            p = i / max(n - 1, 1)
            orient.append(o)
            pos.append(p)
            level.append(level_of(p) if name == "axial" else -1)
    return SliceSet(np.stack(images), None, np.asarray(orient, np.int64), np.asarray(level, np.int64), np.asarray(pos))
