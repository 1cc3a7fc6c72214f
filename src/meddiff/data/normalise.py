"""Patient-wise intensity normalisation to [-1, 1] and its exact inverse.

Med-cDiff normalises intensities "per patient (patient-wise, not per slice)": one linear map
per patient, computed over all of that patient's volumes, so that relative intensities between
the slices of one patient are kept. The window [lo, hi] is either the plain minimum/maximum
(default) or robust percentiles (e.g. 0.5 and 99.5) with values outside clipped.

    forward:  y = 2 (x - lo) / (hi - lo) - 1        (x clipped to [lo, hi] first if clip)
    inverse:  x = (y + 1) / 2 (hi - lo) + lo

`inverse(forward(x)) == x` up to float rounding for every x when clip is False, and for x
inside [lo, hi] when clip is True (values outside the window come back as lo or hi).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping, TypeVar

import numpy as np
import torch

from ..errors import InputError

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


@dataclass(frozen=True)
class Normalisation:
    """Linear map between one patient's original units and [-1, 1].

    lo, hi: intensities (original units, e.g. HU) that map to -1 and +1; lo < hi.
    clip:   True if intensities outside [lo, hi] are clipped (percentile window).
    units:  name of the original units ("HU", "arbitrary", "counts", ...), for reports.
    """

    lo: float
    hi: float
    clip: bool = False
    units: str = "arbitrary"

    def __post_init__(self) -> None:
        if not (np.isfinite(self.lo) and np.isfinite(self.hi) and self.lo < self.hi):
            raise InputError(f"normalisation window must satisfy lo < hi (finite), got lo={self.lo}, hi={self.hi}")

    # ------------------------------------------------------------------ the two maps

    def forward(self, x: ArrayT) -> ArrayT:
        """Original units -> [-1, 1] (outside only if clip is False and x leaves [lo, hi]).

        Works on numpy arrays and torch tensors of any shape; keeps the float dtype
        (integer numpy input becomes float32).
        """
        if isinstance(x, np.ndarray) and not np.issubdtype(x.dtype, np.floating):
            x = x.astype(np.float32)
        if self.clip:
            x = x.clip(self.lo, self.hi)
        return (x - self.lo) * (2.0 / (self.hi - self.lo)) - 1.0

    def inverse(self, y: ArrayT) -> ArrayT:
        """[-1, 1] -> original units: x = (y + 1) / 2 * (hi - lo) + lo (no clipping)."""
        return (y + 1.0) * ((self.hi - self.lo) / 2.0) + self.lo

    def scale(self) -> float:
        """Original units per normalised unit: d x / d y = (hi - lo) / 2 (for std maps)."""
        return (self.hi - self.lo) / 2.0

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_arrays(
        cls,
        arrays: Iterable[np.ndarray],
        percentiles: tuple[float, float] | None = None,
        units: str = "arbitrary",
        name: str = "image",
    ) -> "Normalisation":
        """Window from all voxels of `arrays` (one patient): min/max, or percentiles (clip=True).

        percentiles: (p_low, p_high) in percent, 0 <= p_low < p_high <= 100, e.g. (0.5, 99.5).
        name: used in error messages (patient id or file).
        Raises InputError for empty input, non-finite values or a constant image.
        """
        flat = [np.asarray(a, dtype=np.float64).ravel() for a in arrays]
        values = np.concatenate(flat) if flat else np.empty(0)
        if values.size == 0:
            raise InputError(f"{name}: no voxels to normalise")
        if not np.all(np.isfinite(values)):
            raise InputError(f"{name}: contains NaN or infinite values; expected finite intensities")
        if percentiles is None:
            lo, hi = float(values.min()), float(values.max())
        else:
            p_lo, p_hi = percentiles
            if not (0.0 <= p_lo < p_hi <= 100.0):
                raise InputError(f"--clip-percentiles {p_lo:g} {p_hi:g}: expected percentiles 0 <= LO < HI <= 100")
            lo, hi = (float(v) for v in np.percentile(values, [p_lo, p_hi]))
        if not hi > lo:
            if percentiles is None or float(values.min()) == float(values.max()):
                raise InputError(f"{name}: every voxel has the value {lo:g}; a constant image has no intensity range to "
                                 "normalise (expected an image with more than one value)")
            raise InputError(f"{name}: the {percentiles[0]:g} and {percentiles[1]:g} percentiles are both {lo:g}; expected "
                             "percentiles further apart (e.g. --clip-percentiles 0.5 99.5) or no clipping")
        return cls(lo=lo, hi=hi, clip=percentiles is not None, units=units)

    @classmethod
    def from_volume(
        cls, volumes: Any, percentiles: tuple[float, float] | None = None, units: str | None = None
    ) -> "Normalisation":
        """Window over one `Volume` or a list of one patient's Volumes (`meddiff.io.Volume`).

        units default to ``meta["units"]`` of the first volume ("arbitrary" if absent).
        """
        vols = list(volumes) if isinstance(volumes, (list, tuple)) else [volumes]
        if not vols:
            raise InputError("no volumes to normalise")
        if units is None:
            units = str(vols[0].meta.get("units", "arbitrary"))
        return cls.from_arrays([v.array for v in vols], percentiles, units, name=str(vols[0].source))  # the file, never the patient id

    # ------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Normalisation":
        try:
            return cls(lo=float(d["lo"]), hi=float(d["hi"]), clip=bool(d["clip"]), units=str(d["units"]))
        except KeyError as e:
            raise InputError(f"normalisation entry {dict(d)} lacks key {e}; expected lo, hi, clip, units") from None
