import csv

import numpy as np
import pytest
from PIL import Image

from meddiff.cli import main
from meddiff.data.prepare import PrepareOptions, prepare
from meddiff.errors import InputError

OPTS = PrepareOptions(size=16, min_foreground=0.0)


def _bad_files(root, write_nifti):
    """One bad file of each kind, each in its own patient folder; returns {name: path}."""
    rng = np.random.default_rng(0)
    bad = {}
    (root / "corrupt").mkdir(parents=True)
    bad["corrupt"] = root / "corrupt" / "scan.nii.gz"
    bad["corrupt"].write_bytes(b"\x1f\x8b this is not a gzip stream")
    bad["constant"] = write_nifti(root / "constant" / "flat.nii.gz", np.full((2, 8, 8), 5.0, np.float32))
    nan = rng.random((2, 8, 8)).astype(np.float32)
    nan[0, 3, 3] = np.nan
    bad["nan"] = write_nifti(root / "nan" / "holes.nii.gz", nan)
    bad["4d"] = write_nifti(root / "fourd" / "fmri.nii.gz", rng.random((3, 2, 8, 8)).astype(np.float32))
    bad["rgb"] = root / "rgb" / "photo.png"
    bad["rgb"].parent.mkdir()
    Image.fromarray((rng.random((8, 8, 3)) * 255).astype(np.uint8), "RGB").save(bad["rgb"])
    return bad


@pytest.mark.parametrize(
    "kind, match",
    [("corrupt", "scan.nii.gz"), ("constant", "constant"), ("nan", "NaN"), ("4d", "4D"), ("rgb", "(?i)rgb|colour|color")],
)
def test_each_bad_file_stops_with_error_naming_it(kind, match, tmp_path, write_nifti, multi_patient_dir):
    bad = _bad_files(tmp_path / "bad", write_nifti)
    folder = multi_patient_dir
    target = folder / "zz_bad" / bad[kind].name
    target.parent.mkdir()
    target.write_bytes(bad[kind].read_bytes())
    with pytest.raises(InputError, match=match) as e:
        prepare(folder, tmp_path / "out", PrepareOptions(size=16, on_error="stop"), progress=False)
    assert str(target) in str(e.value)
    assert not (tmp_path / "out").exists()


def test_skip_lists_every_bad_file_and_keeps_the_good_ones(tmp_path, write_nifti, multi_patient_dir):
    bad = _bad_files(multi_patient_dir, write_nifti)
    summary = prepare(multi_patient_dir, tmp_path / "out", PrepareOptions(size=16, on_error="skip", keep_patient_ids=True), progress=False)
    with open(tmp_path / "out" / "skipped.csv", newline="") as f:
        skipped = {r["file"]: r["reason"] for r in csv.DictReader(f)}
    assert set(skipped) == {str(p) for p in bad.values()}
    assert "constant" in skipped[str(bad["constant"])] and "NaN" in skipped[str(bad["nan"])]
    assert sum(summary.patients.values()) == 10  # the good patients p00..p09 only
    assert len(summary.skipped) == 5 and any("skipped 5 file(s)" in line for line in summary.lines())


def test_empty_folder_and_missing_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(InputError, match="no readable image"):
        prepare(tmp_path / "empty", tmp_path / "out", OPTS, progress=False)
    assert main(["prepare", str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    assert str(tmp_path / "missing") in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_bad_options_rejected_before_reading(multi_patient_dir, tmp_path, capsys):
    with pytest.raises(InputError, match="--split"):
        prepare(multi_patient_dir, tmp_path / "o", PrepareOptions(split=(0, 0, 0)), progress=False)
    with pytest.raises(InputError, match="--clip-percentiles"):
        prepare(multi_patient_dir, tmp_path / "o", PrepareOptions(percentiles=(99.0, 1.0)), progress=False)
    assert main(["prepare", str(multi_patient_dir), str(tmp_path / "o"), "--min-foreground", "2"]) == 2
    assert "--min-foreground" in capsys.readouterr().err
