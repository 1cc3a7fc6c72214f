"""Data: per-patient normalisation, slicing and splitting (`meddiff prepare`), degradations
that make the conditions of the restoration tasks, and the (x0, cond, mask) pair dataset.

    files --meddiff.io--> Volume --prepare--> cache (train/val/test.npy, manifest.csv,
    normalisation.json) --PairDataset + degradation--> Pair(x0, cond, mask, case_id)
"""

from .dataset import Pair, PairDataset, Prepared, load_prepared
from .degrade import Degradation, Denoise, Inpaint, SuperResolution, build_degradation
from .normalise import Normalisation

__all__ = [
    "Degradation", "Denoise", "Inpaint", "Normalisation", "Pair", "PairDataset", "Prepared",
    "SuperResolution", "build_degradation", "load_prepared",
]  # fmt: skip
