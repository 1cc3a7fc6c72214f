"""A model's interval calibration: error scale + split-conformal tables, fitted, stored, applied.

An :class:`IntervalCalibration` is what `meddiff sample --interval P` needs for one sampler of one
model: how to compute the error scale u per pixel from what inference has (restored image,
condition, measurement, sample std; features.py: a fixed heuristic or a fitted regressor, no extra
network call) and, per level P, the Mondrian conformal table (conformal.py) that turns u into a
half-width and a predicted RMS error. It lives as JSON in the model file's metadata under
``uncertainty`` (a list: one entry per sampler), written by scripts/uncertainty_card.py, with a
``note`` that names its calibration data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from .conformal import ConformalTable, apply_table, fit_table
from .evaluate import anatomy_mask
from .features import ErrorRegressor, error_scale, feature_stack, fit_regressor

METADATA_KEY = "uncertainty"
LEVELS = (0.8, 0.9, 0.95)
# The regressor's default inputs: on the held-out sources of benchmarks/calibration_heldout.py these three
# measured at least as well as all seven image features or the fixed heuristic (docs/uncertainty.md).
DEFAULT_FEATURES = ("grad_restored", "grad_condition", "change")


@dataclass(frozen=True)
class IntervalCalibration:
    """sampler: e.g. "posterior_mean 1"; samples: S the output averaged; kind: "learned" (regressor)
    or "heuristic" (features.error_scale); tables: one ConformalTable per level."""

    sampler: str
    samples: int
    kind: str
    tables: tuple[ConformalTable, ...]
    regressor: ErrorRegressor | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def levels(self) -> tuple[float, ...]:
        return tuple(t.alpha for t in self.tables)

    def table(self, level: float) -> ConformalTable:
        for t in self.tables:
            if abs(t.alpha - level) < 1e-9:
                return t
        raise InputError(f"--interval {level:g}: this model's intervals are calibrated at "
                         f"{', '.join(f'{a:g}' for a in self.levels)} only")

    def scale(self, restored: np.ndarray, condition: np.ndarray, lowres: np.ndarray | None = None,
              std: np.ndarray | None = None) -> np.ndarray:
        """u [H, W] > 0 of one restored image [H, W] ([-1, 1] units)."""
        if self.kind == "heuristic":
            return error_scale(restored, condition, std)
        assert self.regressor is not None
        return self.regressor.scale(feature_stack(restored, condition, lowres, std))

    def interval(self, level: float, restored: np.ndarray, condition: np.ndarray, lowres: np.ndarray | None = None,
                 std: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(lower, upper, predicted RMS error) [H, W] of one restored image, [-1, 1] units."""
        half, rms = apply_table(self.table(level), self.scale(restored, condition, lowres, std))
        r = np.asarray(restored, np.float64)
        return r - half, r + half, rms

    def sentence(self, level: float) -> str:
        """One sentence for readers of the maps: what they mean and how they were calibrated."""
        return (f"a per-pixel {level:.0%} interval for the true value (split-conformal per bins of a {self.kind} error scale, "
                f"{self.sampler}{'' if self.samples == 1 else f' x{self.samples} samples'}), calibrated on "
                f"{self.extra.get('data', 'training-distribution images')} only, so not guaranteed on other scans")

    def to_dict(self) -> dict:
        return {"sampler": self.sampler, "samples": self.samples, "kind": self.kind,
                "tables": [json.loads(t.to_json()) for t in self.tables],
                "regressor": None if self.regressor is None else self.regressor.to_dict(), "note": self.note,
                "extra": self.extra}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, d: dict) -> "IntervalCalibration":
        tables = tuple(ConformalTable.from_json(json.dumps(t)) for t in d["tables"])
        reg = None if d.get("regressor") is None else ErrorRegressor.from_dict(d["regressor"])
        return cls(d["sampler"], int(d["samples"]), d["kind"], tables, reg, d.get("note", ""), d.get("extra", {}))


def fit_calibration(rows, truths, *, sampler: str, samples: int = 1, kind: str = "learned", alpha: float = 0.9,
                    bins: int = 10, levels: tuple[float, ...] = LEVELS, features: tuple[str, ...] | None = None,
                    data: str = "", note: str = "") -> IntervalCalibration:
    """Fit on calibration images: rows[i] = (restored, std or None, condition, lowres, ...) of truths[i]
    (arrays [H, W] in [-1, 1]). Images 0, 3, 4, 7, ... fit the scale (kind "learned"), images 1, 2,
    5, 6, ... the tables (the heuristic has nothing to fit: every image calibrates);
    pixels inside the anatomy of the truth (evaluate.anatomy_mask). features: the regressor's inputs
    (features.FEATURES names; default DEFAULT_FEATURES, plus the sample std when samples > 1). data:
    a short name of the calibration images for the maps' description; note: the full account."""
    if kind not in ("learned", "heuristic"):
        raise InputError(f"kind {kind!r}: expected 'learned' or 'heuristic'")
    if len(rows) != len(truths) or len(rows) < 2:
        raise InputError(f"{len(rows)} restorations for {len(truths)} truths; expected the same number, at least 2")
    if alpha not in levels:
        levels = tuple(sorted({*levels, alpha}))
    masks = [anatomy_mask(t) for t in truths]
    first = [i for i in range(len(rows)) if i % 4 in (0, 3)]  # balanced over kinds of image that alternate in pairs
    second = [i for i in range(len(rows)) if i % 4 in (1, 2)]
    if kind == "heuristic":
        second = list(range(len(rows)))  # nothing to fit first: every image calibrates
    reg = None
    if kind == "learned":
        stacks, errs = [], []
        for (r, s, c, lr, *_), t, m in ((rows[i], truths[i], masks[i]) for i in first):
            stacks.append(feature_stack(r, c, lr, s)[:, m])
            errs.append((r - t)[m])
        names = tuple(features) if features else DEFAULT_FEATURES + (("std",) if samples > 1 else ())
        reg = fit_regressor(np.concatenate(stacks, axis=1), np.concatenate(errs), names, note=note)
    probe = IntervalCalibration(sampler, samples, kind, (), reg, note)
    u = np.concatenate([probe.scale(*_inputs(rows[i]))[masks[i]] for i in second])
    e = np.concatenate([(rows[i][0] - truths[i])[masks[i]] for i in second])
    tables = tuple(fit_table(u, e, alpha=a, bins=bins, note=note) for a in levels)
    return IntervalCalibration(sampler, samples, kind, tables, reg, note, {"data": data} if data else {})


def _inputs(row) -> tuple:
    r, s, c, lr = row[:4]
    return r, c, lr, s


def read_calibrations(model_file: str | Path) -> list[IntervalCalibration]:
    """The calibrations stored in a safetensors model file's metadata ([] if none)."""
    from safetensors import safe_open

    with safe_open(str(model_file), framework="pt") as f:
        meta = f.metadata() or {}
    if METADATA_KEY not in meta:
        return []
    return [IntervalCalibration.from_dict(d) for d in json.loads(meta[METADATA_KEY])]


def store_calibration(model_file: str | Path, cal: IntervalCalibration) -> None:
    """Add (or replace, same sampler and samples) `cal` in the model file's metadata, rewritten atomically."""
    from ..checkpointing import update_metadata

    kept = [c for c in read_calibrations(model_file) if (c.sampler, c.samples) != (cal.sampler, cal.samples)]
    update_metadata(model_file, **{METADATA_KEY: json.dumps([c.to_dict() for c in kept + [cal]])})


def calibration_for(model_file: str | Path, sampler: str, samples: int) -> IntervalCalibration:
    """The stored calibration of this sampler ("name steps") and sample count, or an InputError naming what there is."""
    cals = read_calibrations(model_file)
    for c in cals:
        if c.sampler == sampler and c.samples == samples:
            return c
    have = "; ".join(f"--sampler {c.sampler.split()[0]} --steps {c.sampler.split()[-1]} --samples {c.samples}" for c in cals)
    raise InputError(f"--interval: {model_file} has no interval calibration for {sampler} with {samples} sample(s)"
                     + (f"; it has one for {have}" if have else "; scripts/uncertainty_card.py fits one"))
