"""meddiff degrade: paired test sets from the user's own images, with the training degradation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.data import get_testdata_file

from meddiff.cli import main
from meddiff.data.degrade import SuperResolution
from meddiff.data.normalise import Normalisation
from meddiff.data.samples import samples_dir
from meddiff.io import read_volume


@pytest.fixture
def highres(tmp_path) -> Path:
    """A tiny real high-resolution set: a 64x64x2 crop of Colin27 (NIfTI) and one slice of it as 8-bit PNG."""
    img = nib.load(str(samples_dir("colin27") / "colin27" / "axial.nii.gz"))
    a = np.asarray(img.dataobj)[44:108, 60:124, 20:22].astype(np.float32)
    (tmp_path / "hr" / "p1").mkdir(parents=True)
    (tmp_path / "hr" / "p2").mkdir()
    nib.save(nib.Nifti1Image(a, img.affine), str(tmp_path / "hr" / "p1" / "brain.nii.gz"))
    s = a[..., 0]
    Image.fromarray(((s - s.min()) / (s.max() - s.min()) * 255).astype(np.uint8)).save(tmp_path / "hr" / "p2" / "slice.png")
    return tmp_path / "hr"
from meddiff.io.phi import pseudonym

P1 = pseudonym("p1")  # degrade names output folders by pseudonym (meddiff.io.phi)


def test_sr_end_to_end_sample_and_evaluate(tmp_path, highres):
    """degrade -> sample with the shipped model -> evaluate: one command each, names pair up."""
    pairs, pred, ev = tmp_path / "pairs", tmp_path / "pred", tmp_path / "ev"
    assert main(["degrade", "-i", str(highres), "-o", str(pairs), "--task", "sr", "--factor", "4"]) == 0
    truth = read_volume(pairs / "truth" / P1 / "brain.nii.gz")
    low = read_volume(pairs / "input" / P1 / "brain.nii.gz")
    assert (pairs / "truth" / pseudonym("p2") / "slice.png").read_bytes() == (highres / "p2" / "slice.png").read_bytes()
    assert (truth.shape, low.shape) == ((2, 64, 64), (2, 16, 16))  # slices along axis 0, in-plane / 4
    assert np.allclose(low.spacing, (truth.spacing[0], 4 * truth.spacing[1], 4 * truth.spacing[2]))
    centre = lambda v, idx: (v.affine @ np.array([*idx, 1.0]))[:3]  # noqa: E731  field of view kept
    assert np.allclose(centre(low, (0, -0.5, -0.5)), centre(truth, (0, -0.5, -0.5)))
    # the measurement is exactly the training degradation of the normalised truth, back in original units
    norm = Normalisation.from_volume(truth)
    x = torch.from_numpy(norm.forward(truth.array)).float()[:, None]
    want = norm.inverse(SuperResolution(4.0).downsample(x)[:, 0]).numpy()
    assert np.abs(low.array - want).max() < 1e-3 * (norm.hi - norm.lo)
    assert main(["sample", "--checkpoint", "demo_sr_x4", "-i", str(pairs / "input"), "-o", str(pred), "--steps", "2",
                 "--no-progress", "--device", "cpu"]) == 0
    assert main(["evaluate", "--pred", f"meddiff={pred}", "--truth", str(pairs / "truth"), "--input", str(pairs / "input"),
                 "--no-fid", "--lpips", "none", "--bootstrap", "100", "--no-progress", "-o", str(ev)]) == 0
    table = (ev / "results.md").read_text()
    assert "| meddiff | 3 |" in table and "| bicubic | 3 |" in table  # 2 NIfTI slices + 1 PNG, all paired


def _std_in_units(pairs: Path, highres: Path) -> float:
    truth = read_volume(highres / "p1" / "brain.nii.gz")
    noisy = read_volume(pairs / "input" / P1 / "brain.nii.gz")
    norm = Normalisation.from_volume(truth)
    return float(np.std(norm.forward(noisy.array) - norm.forward(truth.array)))


def test_denoise_is_seeded_and_has_the_asked_level(tmp_path, highres):
    argv = ["degrade", "-i", str(highres), "--task", "denoise", "--noise-std", "0.1", "0.1", "--salt-pepper", "0", "0"]
    assert main([*argv, "-o", str(tmp_path / "a")]) == 0
    assert main([*argv, "-o", str(tmp_path / "b")]) == 0
    assert main([*argv, "-o", str(tmp_path / "c"), "--seed", "1"]) == 0
    a, b, c = (read_volume(tmp_path / n / "input" / P1 / "brain.nii.gz").array for n in "abc")
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # sigma 0.1 in [-1, 1] units; clamping at -1 (dark background) removes some noise, so allow 0.07..0.105
    assert 0.07 < _std_in_units(tmp_path / "a", highres) < 0.105
    levels = json.loads((tmp_path / "a" / "pairs.json").read_text())["images"][f"{P1}/brain"]
    assert levels["noise_std"] == pytest.approx([0.1, 0.1])


def test_inpaint_keeps_known_pixels_and_writes_masks(tmp_path, highres):
    assert main(["degrade", "-i", str(highres / "p1"), "-o", str(tmp_path / "p"), "--task", "inpaint",
                 "--mask-coverage", "0.2", "0.3"]) == 0
    truth = read_volume(highres / "p1" / "brain.nii.gz").array
    holed = read_volume(tmp_path / "p" / "input" / "brain.nii.gz").array
    mask = read_volume(tmp_path / "p" / "mask" / "brain.nii.gz").array
    assert set(np.unique(mask)) == {0.0, 1.0}
    assert 0.1 < mask.mean() < 0.4
    assert np.allclose(holed[mask == 0], truth[mask == 0], atol=1e-3 * np.ptp(truth))
    assert np.allclose(holed[mask == 1], (truth.max() + truth.min()) / 2, atol=1e-3 * np.ptp(truth))


def test_dicom_in_dicom_out_and_task_from_a_checkpoint(tmp_path):
    (tmp_path / "in").mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "in" / "ct.dcm")
    assert main(["degrade", "-i", str(tmp_path / "in" / "ct.dcm"), "-o", str(tmp_path / "p"), "--checkpoint", "demo_sr_multi"]) == 0
    ds = pydicom.dcmread(tmp_path / "p" / "input" / "ct.dcm")
    assert (ds.Rows, ds.Columns) == (32, 32)  # 128 / 4: the model's task.sr_factor
    assert json.loads((tmp_path / "p" / "pairs.json").read_text())["sr_factor"] == 4.0


def test_refusals(tmp_path, highres, capsys):
    assert main(["degrade", "-i", str(highres), "-o", str(tmp_path / "x"), "--task", "sr", "--noise-std", "0.1", "0.2"]) == 2
    assert "--noise-std applies to --task denoise" in capsys.readouterr().err
    assert main(["degrade", "-i", str(tmp_path / "none.nii.gz"), "-o", str(tmp_path / "y")]) == 2
    assert "none.nii.gz: no such file" in capsys.readouterr().err
    assert main(["degrade", "-i", str(highres), "-o", str(highres / "p1")]) == 2  # never into an input
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
