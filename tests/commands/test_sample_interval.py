"""`meddiff sample --interval 0.9` on a tiny real image the model never saw (issue 30): the lower /
upper maps exist beside the output in its format and geometry, bracket it, say what they are,
and cover most of the truth inside the anatomy of a held-out slice."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from meddiff.cli import main
from meddiff.data.degrade import SuperResolution
from meddiff.data.samples import samples_dir
from meddiff.io import Volume, read_volume, write_volume
from meddiff.uncertainty import anatomy_mask


@pytest.fixture(scope="module")
def colin_lowres(tmp_path_factory):
    """Two central Colin27 axial slices (never seen in training or calibration), 128^2 truth in
    [0, 1000] and its x4 bicubic measurement as a 32^2 NIfTI (4 mm pixels)."""
    vol = read_volume(samples_dir("colin27") / "colin27" / "axial.nii.gz").array
    mid = len(vol) // 2
    t = vol[[mid - 6, mid + 6], 30:158, 12:140].astype(np.float64)
    t = (t - vol.min()) / (vol.max() - vol.min()) * 2 - 1  # [-1, 1]: SuperResolution clamps to it
    low = SuperResolution(4.0).downsample(torch.from_numpy(t).float()[:, None])[:, 0].numpy() * 500 + 500
    t = t * 500 + 500
    path = tmp_path_factory.mktemp("in") / "colin.nii.gz"
    write_volume(Volume(low.astype(np.float32), (3.0, 4.0, 4.0), np.diag([4.0, 4.0, 3.0, 1.0]), "anon", path, {}), path,
                 synthetic=False, description="test input")
    return path, t


@pytest.mark.parametrize("model", ["sr_x4_general", "sr_x4_general_1step"])  # the two one-call paths
def test_interval_maps_bracket_the_output_and_cover_the_truth(colin_lowres, tmp_path, model):
    torch.set_num_threads(1)
    src, truth = colin_lowres
    out = tmp_path / "o"
    assert main(["sample", "--checkpoint", model, "--input", str(src), "--output", str(out),
                 "--interval", "0.9", "--no-progress"]) == 0
    files = {k: out / f"colin_{k}.nii.gz" for k in ("restored", "lower", "upper")}
    imgs = {k: nib.load(p) for k, p in files.items()}
    assert all(np.allclose(i.affine, imgs["restored"].affine) for i in imgs.values())
    r, lo, hi = (np.asarray(read_volume(files[k]).array, np.float64) for k in ("restored", "lower", "upper"))
    assert r.shape == lo.shape == hi.shape == truth.shape
    assert (lo <= r + 1e-3).all() and (r <= hi + 1e-3).all() and (hi - lo).mean() > 1.0
    m = np.stack([anatomy_mask(x / 500 - 1) for x in truth])
    inside = (lo <= truth) & (truth <= hi)
    print(f"{model}: 90% interval covers {inside[m].mean():.3f} of the truth inside the anatomy")
    assert 0.75 <= inside[m].mean() <= 0.99, inside[m].mean()
    side = json.loads((out / "colin_lower.json").read_text())
    assert "90% interval for the true value" in side["description"] and "MNI152" in side["description"]
    assert imgs["lower"].header["descrip"].tobytes().decode().startswith("meddiff synthetic: meddiff sr (lower)")


def test_interval_needs_a_calibration_for_the_sampler(colin_lowres, tmp_path):
    src, _ = colin_lowres
    assert main(["sample", "--checkpoint", "sr_x4_general", "--input", str(src), "--output", str(tmp_path / "a"),
                 "--interval", "0.9", "--sampler", "ddim", "--steps", "2", "--no-progress"]) == 2
    assert main(["sample", "--method", "bicubic", "--input", str(src), "--output", str(tmp_path / "b"),
                 "--interval", "0.9", "--no-progress"]) == 2
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
