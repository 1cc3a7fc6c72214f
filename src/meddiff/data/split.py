"""Train/val/test split by patient: no patient's slices end up in two splits.

The assignment depends only on the set of patient ids and the seed (ids are sorted, then
shuffled with numpy's PCG64 seeded by `seed`), never on file order.

Counts for n patients and fractions (f_train, f_val, f_test), normalised to sum to 1:
n_val = round(f_val n), n_test = round(f_test n) (each at least 1 when its fraction is > 0
and n >= 3), n_train = the rest. Small cohorts:
- 1 patient: it goes to the split with the largest fraction (train for 0.8/0.1/0.1); the
  others are empty.
- 2 patients: one goes to train and one to test (or to val if f_test = 0); if f_train = 0,
  both go to the larger of val/test.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

SPLITS = ("train", "val", "test")


def split_counts(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """Number of patients (train, val, test) for n patients; see the module docstring."""
    f = np.asarray(fractions, dtype=np.float64)
    if f.shape != (3,) or np.any(f < 0) or f.sum() <= 0:
        raise InputError(f"--split: expected three non-negative fractions with a positive sum, got {tuple(fractions)}")
    f = f / f.sum()
    if n == 0:
        return 0, 0, 0
    if n == 1:
        counts = [0, 0, 0]
        counts[int(np.argmax(f))] = 1
        return tuple(counts)  # type: ignore[return-value]
    if n == 2:
        if f[0] == 0:
            return (0, 2, 0) if f[1] >= f[2] else (0, 0, 2)
        if f[1] == 0 and f[2] == 0:
            return 2, 0, 0
        return (1, 0, 1) if f[2] > 0 else (1, 1, 0)
    n_val = int(round(f[1] * n))
    n_test = int(round(f[2] * n))
    if f[1] > 0:
        n_val = max(n_val, 1)
    if f[2] > 0:
        n_test = max(n_test, 1)
    n_train = n - n_val - n_test
    if f[0] > 0 and n_train < 1:  # tiny cohorts: keep one training patient
        if n_val >= n_test:
            n_val -= 1
        else:
            n_test -= 1
        n_train = 1
    return n_train, n_val, n_test


def split_patients(patient_ids: list[str] | set[str], fractions: tuple[float, float, float], seed: int = 0) -> dict[str, str]:
    """Map every patient id to "train", "val" or "test" (deterministic for a seed)."""
    ids = sorted(set(patient_ids))
    n_train, n_val, _ = split_counts(len(ids), fractions)
    order = np.random.default_rng(seed).permutation(len(ids))
    out: dict[str, str] = {}
    for rank, i in enumerate(order):
        out[ids[i]] = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
    return out


def describe_small_cohort(n: int, fractions: tuple[float, float, float]) -> str | None:
    """A sentence for the summary when some split is empty because there are too few patients."""
    counts = split_counts(n, fractions)
    empty = [s for s, c, f in zip(SPLITS, counts, fractions) if c == 0 and f > 0]
    if not empty:
        return None
    got = ", ".join(f"{s}={c}" for s, c in zip(SPLITS, counts))
    return (
        f"only {n} patient(s): split by patient gives {got}; {' and '.join(empty)} "
        f"{'is' if len(empty) == 1 else 'are'} empty (e.g. use --split 0 0 1 to make a test-only set)"
    )
