import csv
import json

import nibabel as nib
import numpy as np
import pytest

from meddiff.cli import main
from meddiff.data import prepare as prepare_mod
from meddiff.data.dataset import load_prepared
from meddiff.data.prepare import PrepareOptions, prepare
from meddiff.data.samples import samples_dir
from meddiff.data.slices import SliceGeometry, pad_to_square, resize, to_model_slice
from meddiff.errors import InputError


@pytest.fixture
def real_subset(tmp_path, write_nifti):
    """Three 'patients' cut from the shipped samples: 4 slices each, [Z, Y, X] as meddiff reads."""
    root = tmp_path / "real"
    for pid, (sample, orient, z0) in {
        "mni": ("mni152", "axial", 30), "colin": ("colin27", "axial", 20), "colin_cor": ("colin27", "coronal", 25),
    }.items():
        path = next(samples_dir(sample).glob(f"*/{orient}.nii.gz"))
        zyx = np.asarray(nib.load(path).dataobj).T[z0 : z0 + 4].astype(np.float32)
        write_nifti(root / pid / f"{orient}.nii.gz", zyx)
    return root


def _manifest(out):
    with open(out / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_cli_prepare_end_to_end_on_real_slices(real_subset, tmp_path, capsys):
    out = tmp_path / "prep"
    rc = main(["prepare", str(real_subset), str(out), "--size", "32", "--split", "0.34", "0.33", "0.33", "--no-progress",
               "--keep-patient-tags"])  # the real folder names, to find the source files again
    assert rc == 0
    assert "prepared 12 slices from 3 patients" in capsys.readouterr().out
    rows = _manifest(out)
    for split in ("train", "val", "test"):
        arr = np.load(out / f"{split}.npy", mmap_mode="r")
        srows = [r for r in rows if r["split"] == split]
        assert arr.shape == (len(srows), 32, 32) and arr.dtype == np.float32
        assert [int(r["index"]) for r in srows] == list(range(len(srows)))
        assert len({r["patient_id"] for r in srows}) == 1  # 3 patients, one per split
        assert arr.size == 0 or (arr.min() >= -1 and arr.max() <= 1)
    # the cached pixels are the patient-normalised, padded, resized source slice
    r = rows[0]
    src = np.asarray(nib.load(real_subset / r["source"]).dataobj).T.astype(np.float32)
    patient = [np.asarray(nib.load(p).dataobj) for p in (real_subset / r["patient_id"]).glob("*.nii.gz")]
    lo, hi = min(p.min() for p in patient), max(p.max() for p in patient)
    expected, geom = to_model_slice(2 * (src[int(r["slice_index"])] - lo) / (hi - lo) - 1, 32)
    np.testing.assert_allclose(np.load(out / f"{r['split']}.npy")[int(r["index"])], expected, atol=1e-6)
    assert (int(r["pad_left"]), int(r["pad_right"]), int(r["height"])) == (geom.pad_left, geom.pad_right, 189)
    norm = json.loads((out / "normalisation.json").read_text())["patients"][r["patient_id"]]
    assert (norm["lo"], norm["hi"], norm["clip"]) == (lo, hi, False)
    assert (out / "skipped.csv").read_text().strip() == "file,reason"


def test_axis_all_and_foreground_filter(tmp_path, write_nifti):
    vol = np.zeros((4, 6, 8), np.float32)
    vol[1, 1:5, 2:6] = 10.0  # one slice with 16/48 = 33% foreground; slices 0, 2, 3 empty
    write_nifti(tmp_path / "in" / "p" / "v.nii.gz", vol)
    s = prepare(tmp_path / "in", tmp_path / "o0", PrepareOptions(size=8, min_foreground=0.05), progress=False)
    assert s.slices["train"] == 1 and s.empty_slices == 3
    s = prepare(tmp_path / "in", tmp_path / "o1", PrepareOptions(size=8, axes=(0, 1, 2), min_foreground=0.0), progress=False)
    assert s.slices["train"] == 4 + 6 + 8
    rows = _manifest(tmp_path / "o1")
    assert [sum(r["axis"] == str(a) for r in rows) for a in range(3)] == [4, 6, 8]
    assert {r["height"] + "x" + r["width"] for r in rows if r["axis"] == "1"} == {"4x8"}
    with pytest.raises(InputError, match="no usable slices"):
        prepare(tmp_path / "in", tmp_path / "o2", PrepareOptions(size=8, min_foreground=0.5), progress=False)


def test_percentile_clipping_is_recorded(multi_patient_dir, tmp_path):
    prep = tmp_path / "p"
    main(["prepare", str(multi_patient_dir), str(prep), "--size", "16", "--clip-percentiles", "1", "99", "--no-progress",
          "--keep-patient-tags"])
    loaded = load_prepared(prep)
    n = loaded.normalisation["p03"]
    assert n.clip and n.hi < 200.0  # p03's maximum is ~200; the 99th percentile is below it


def test_interrupted_prepare_leaves_nothing(multi_patient_dir, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare_mod, "_assemble", boom)
    with pytest.raises(KeyboardInterrupt):
        prepare(multi_patient_dir, tmp_path / "out", PrepareOptions(size=16), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_existing_output_needs_overwrite(multi_patient_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(InputError, match="already exists"):
        prepare(multi_patient_dir, out, PrepareOptions(size=16), progress=False)
    # --overwrite never replaces a folder meddiff did not write
    with pytest.raises(InputError, match="not written by meddiff"):
        prepare(multi_patient_dir, out, PrepareOptions(size=16, overwrite=True), progress=False)
    assert (out / "keep.txt").read_text() == "x"
    ours = tmp_path / "ours"
    prepare(multi_patient_dir, ours, PrepareOptions(size=16), progress=False)
    (ours / "train.npy").write_bytes(b"old")
    prepare(multi_patient_dir, ours, PrepareOptions(size=16, overwrite=True), progress=False)
    assert (ours / "train.npy").stat().st_size > 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "ours", "out"]


def test_pad_resize_geometry_round_trip():
    img = np.linspace(-1, 1, 6 * 10, dtype=np.float32).reshape(6, 10)
    padded, pads = pad_to_square(img)
    assert padded.shape == (10, 10) and pads == (2, 2, 0, 0) and np.all(padded[:2] == -1)
    geom = SliceGeometry(6, 10, *pads, size=10)
    np.testing.assert_allclose(geom.restore(resize(padded, 10)), img, atol=1e-6)
    assert geom.restore(np.zeros((3, 10, 10))).shape == (3, 6, 10)
