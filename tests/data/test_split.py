import csv

import pytest

from meddiff.data.prepare import PrepareOptions, prepare
from meddiff.data.split import describe_small_cohort, split_counts, split_patients
from meddiff.errors import InputError


def _patients_per_split(out):
    with open(out / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    splits = {}
    for r in rows:
        splits.setdefault(r["patient_id"], set()).add(r["split"])
    return splits


def test_prepared_split_keeps_each_patient_in_one_split_and_is_deterministic(multi_patient_dir, tmp_path):
    opts = PrepareOptions(size=16, split=(0.6, 0.2, 0.2), seed=3, min_foreground=0.0, keep_patient_ids=True)
    a = _patients_per_split(prepare(multi_patient_dir, tmp_path / "a", opts, progress=False).output)
    b = _patients_per_split(prepare(multi_patient_dir, tmp_path / "b", opts, progress=False).output)
    assert set(a) == {f"p{p:02d}" for p in range(10)}
    assert all(len(s) == 1 for s in a.values())  # no patient in two splits
    assert a == b
    counts = {s: sum(1 for v in a.values() if v == {s}) for s in ("train", "val", "test")}
    assert counts == {"train": 6, "val": 2, "test": 2}
    c = _patients_per_split(prepare(multi_patient_dir, tmp_path / "c", PrepareOptions(size=16, split=(0.6, 0.2, 0.2), seed=4, min_foreground=0.0), progress=False).output)
    assert c != a  # another seed, another assignment


def test_split_depends_on_ids_not_order():
    ids = [f"case{i}" for i in range(50)]
    a = split_patients(ids, (0.8, 0.1, 0.1), seed=0)
    b = split_patients(list(reversed(ids)), (0.8, 0.1, 0.1), seed=0)
    assert a == b
    assert sorted(a.values()).count("test") == 5 and sorted(a.values()).count("val") == 5


@pytest.mark.parametrize(
    "n, fractions, expected",
    [
        (296, (0.8, 0.1, 0.1), (236, 30, 30)),
        (3, (0.8, 0.1, 0.1), (1, 1, 1)),
        (4, (0.8, 0.1, 0.1), (2, 1, 1)),
        (1, (0.8, 0.1, 0.1), (1, 0, 0)),
        (1, (0, 0, 1), (0, 0, 1)),
        (2, (0.8, 0.1, 0.1), (1, 0, 1)),
        (2, (0.8, 0.2, 0.0), (1, 1, 0)),
        (2, (0, 0, 1), (0, 0, 2)),
        (10, (1, 0, 0), (10, 0, 0)),
    ],
)
def test_split_counts(n, fractions, expected):
    assert split_counts(n, fractions) == expected


def test_small_cohort_is_explained_and_bad_fractions_rejected():
    assert "test is empty" not in (describe_small_cohort(10, (0.8, 0.1, 0.1)) or "")
    note = describe_small_cohort(1, (0.8, 0.1, 0.1))
    assert "only 1 patient" in note and "val and test are empty" in note
    assert "val is empty" in describe_small_cohort(2, (0.8, 0.1, 0.1))
    with pytest.raises(InputError, match="--split"):
        split_counts(5, (0.5, -0.1, 0.6))
