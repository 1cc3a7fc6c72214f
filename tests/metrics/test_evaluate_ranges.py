"""--data-range: a CT and an MR together are scored each on its own range by default; pooled only when asked."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest

from meddiff.cli import main


def _pair(root, name, truth, offset):
    for sub, arr in (("truth", truth), ("pred", truth + offset)):
        (root / sub).mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(arr.astype(np.float32), np.eye(4)), str(root / sub / f"{name}.nii.gz"))


@pytest.fixture
def ct_and_mr(tmp_path):
    rng = np.random.default_rng(0)
    _pair(tmp_path, "ct", rng.uniform(-1000, 2000, (16, 16, 1)), 30.0)  # range ~3000 HU, error 30
    _pair(tmp_path, "mr", rng.uniform(0, 300, (16, 16, 1)), 3.0)  # range ~300, error 3: the same relative error
    return tmp_path


def _psnr(root, out):
    with open(out / "per_image.csv") as f:
        return {r["image"]: float(r["psnr"]) for r in csv.DictReader(f)}


def test_per_image_range_scores_each_file_on_its_own_range(ct_and_mr, capsys):
    root = ct_and_mr
    base = ["evaluate", "--pred", f"m={root / 'pred'}", "--truth", str(root / "truth"), "--no-fid", "--lpips", "none",
            "--bootstrap", "100", "--no-progress"]
    assert main([*base, "--data-range", "pooled", "-o", str(root / "pooled")]) == 0
    assert "WARNING: the ground-truth files' own ranges differ" in capsys.readouterr().out
    assert main([*base, "-o", str(root / "own")]) == 0  # the default
    assert "WARNING" not in capsys.readouterr().out
    assert main([*base, "--data-range", "per-image", "-o", str(root / "asked")]) == 0
    assert _psnr(root, root / "asked") == _psnr(root, root / "own")
    own, pooled = _psnr(root, root / "own"), _psnr(root, root / "pooled")
    truths = {k: np.asarray(nib.load(str(root / "truth" / f"{k}.nii.gz")).dataobj) for k in ("ct", "mr")}
    for k, err in (("ct", 30.0), ("mr", 3.0)):
        r = float(np.ptp(truths[k]))
        assert own[k] == pytest.approx(10 * np.log10(r**2 / err**2), abs=1e-3)  # PSNR with the file's own R
    assert own["ct"] == pytest.approx(own["mr"], abs=0.5)  # same relative error -> about the same PSNR
    assert pooled["mr"] - own["mr"] > 15  # the pooled range inflated the MR's PSNR by ~20 dB
