"""`meddiff evaluate` end to end on tiny folders of .npy files."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from meddiff.cli import main


def _truth(k: int) -> np.ndarray:
    y, x = np.mgrid[:32, :32] / 32
    return 0.8 * np.sin(2 * np.pi * ((k + 1) * x + y))


@pytest.fixture
def folders(tmp_path):
    for d in ("pred", "truth", "lr"):
        (tmp_path / d / "sub").mkdir(parents=True)
    offsets = {"a": 0.1, "sub/b": 0.2}  # pred = truth + constant: MSE = offset^2 exactly
    for k, (name, off) in enumerate(offsets.items()):
        t = _truth(k)
        np.save(tmp_path / "truth" / f"{name}.npy", t)
        np.save(tmp_path / "pred" / f"{name}.npy", t + off)
        np.save(tmp_path / "lr" / f"{name}.npy", t.reshape(8, 4, 8, 4).mean(axis=(1, 3)))
    return tmp_path, offsets


def test_evaluate_writes_tables_with_expected_psnr(folders, capsys):
    root, offsets = folders
    out = root / "eval"
    rc = main(["evaluate", "--pred", str(root / "pred"), "--truth", str(root / "truth"), "--input", str(root / "lr"),
               "--method-name", "model", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert printed == (out / "results.md").read_text(encoding="utf-8")
    assert "data range R = 2 (auto" in printed
    with open(out / "per_image.csv") as f:
        recs = list(csv.DictReader(f))
    model = {r["image"]: float(r["psnr"]) for r in recs if r["method"] == "model"}
    assert model == pytest.approx({k: 10 * np.log10(4 / v**2) for k, v in offsets.items()}, abs=1e-4)  # float32 files
    assert sorted({r["method"] for r in recs}) == ["bicubic", "bilinear", "model"]
    with open(out / "results.csv") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    assert float(rows["model"]["psnr_mean"]) == pytest.approx(np.mean(list(model.values())))
    assert int(rows["bicubic"]["n"]) == 2
    assert float(rows["bicubic"]["psnr_mean"]) > float(rows["bilinear"]["psnr_mean"])


def test_volumes_are_scored_per_slice_and_empty_slices_skipped(tmp_path, capsys):
    t = np.stack([_truth(0), np.zeros((32, 32)), _truth(1)])
    for d in ("p", "t"):
        (tmp_path / d).mkdir()
    np.save(tmp_path / "t" / "vol.npy", t)
    np.save(tmp_path / "p" / "vol.npy", t + 0.05)
    assert main(["evaluate", "--pred", str(tmp_path / "p"), "--truth", str(tmp_path / "t"), "--out", str(tmp_path / "o")]) == 0
    with open(tmp_path / "o" / "per_image.csv") as f:
        assert [r["image"] for r in csv.DictReader(f)] == ["vol[z=0]", "vol[z=2]"]
    assert "1 slice(s) with constant ground truth skipped" in capsys.readouterr().out


def test_missing_pairs_are_named(folders, capsys):
    root, _ = folders
    (root / "pred" / "sub" / "b.npy").unlink()
    np.save(root / "pred" / "extra.npy", np.zeros((32, 32)))
    rc = main(["evaluate", "--pred", str(root / "pred"), "--truth", str(root / "truth")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "no ground truth in" in err and "extra.npy" in err and "no prediction in" in err and "sub/b.npy" in err


def test_shape_mismatch_and_nan_are_errors(folders, capsys):
    root, _ = folders
    np.save(root / "pred" / "a.npy", np.zeros((32, 31)))
    assert main(["evaluate", "--pred", str(root / "pred"), "--truth", str(root / "truth")]) == 2
    assert "prediction shape (32, 31) differs from ground-truth shape (32, 32)" in capsys.readouterr().err
    p = _truth(0)
    p[5, 5] = np.nan
    np.save(root / "pred" / "a.npy", p)
    assert main(["evaluate", "--pred", str(root / "pred"), "--truth", str(root / "truth")]) == 2
    err = capsys.readouterr().err
    assert "a.npy" in err and "1 NaN" in err


def test_bad_data_range_is_an_error(folders, capsys):
    root, _ = folders
    assert main(["evaluate", "--pred", str(root / "pred"), "--truth", str(root / "truth"), "--data-range", "wide"]) == 2
    assert "--data-range must be 'auto' or a number, got 'wide'" in capsys.readouterr().err


def test_png_truth_pairs_with_npy_prediction_and_auto_range(tmp_path, capsys):
    from PIL import Image

    for d in ("p", "t"):
        (tmp_path / d).mkdir()
    t = np.tile(np.linspace(0, 200, 24).round().astype(np.uint8), (20, 1))  # 8-bit counts 0..200
    Image.fromarray(t).save(tmp_path / "t" / "x1.png")
    np.save(tmp_path / "p" / "x1.npy", t.astype(np.float32) + 5)
    assert main(["evaluate", "--pred", str(tmp_path / "p"), "--truth", str(tmp_path / "t"), "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "R = 200 (auto: max - min of all ground truth, [0, 200])" in out
    with open(tmp_path / "o" / "per_image.csv") as f:
        (rec,) = list(csv.DictReader(f))
    assert rec["image"] == "x1" and float(rec["psnr"]) == pytest.approx(10 * np.log10(200**2 / 25), abs=1e-6)
