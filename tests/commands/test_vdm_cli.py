"""`meddiff train / sample / evaluate --likelihood` for a VDM, end to end on the shipped brains:
MNI152 slices (class = orientation, from the stack file names) for training, Colin27 held out."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image

from meddiff.cli import main
from meddiff.data.prepare import PrepareOptions, prepare
from meddiff.data.samples import samples_dir
from meddiff.io import read_volume
from meddiff.train.checkpoint import resolve_model_file
from meddiff.io.dicom_write import MARKER_SYNTHETIC

TINY = ["vdm.embedding_dim=16", "vdm.n_layers=2", "vdm.gamma_features=16", "train.batch_size=16", "train.log_every=10",
        "train.warmup_steps=5", "train.device=cpu", "train.threads=1", "data.size=16", "train.lr=3.0e-3", "train.ema_decay=0.8"]


@pytest.fixture(scope="module")
def brains(tmp_path_factory):
    """(MNI152 prepared at 16x16, all train; Colin27 at 16x16, all test; runs folder) with a trained
    and an untrained (lr 1e-30) class-conditional VDM."""
    root = tmp_path_factory.mktemp("vdm_cli")
    prepare(samples_dir("mni152"), root / "mni", PrepareOptions(size=16), progress=False)
    prepare(samples_dir("colin27"), root / "colin", PrepareOptions(size=16, split=(0, 0, 1)), progress=False)
    def train(out, *overrides):
        return main(["train", "--no-progress", "--out", str(root / out), "--config", "configs/vdm_brain.yaml",
                     f"data.prepared={root / 'mni'}", *TINY, *overrides])

    with torch.random.fork_rng():
        assert train("trained", "train.steps=60", "train.ckpt_every=60") == 0
        assert train("untrained", "train.steps=1", "train.lr=1.0e-30") == 0
    return root


def test_train_logs_the_three_terms_in_bits_per_dim(brains):
    log = (brains / "trained" / "train_log.csv").read_text().splitlines()
    assert log[0] == "step,loss,lr,images_per_s,elapsed_s,reconstruction_bpd,latent_bpd,diffusion_bpd"
    first, last = (float(line.split(",")[1]) for line in (log[1], log[-1]))
    assert len(log) == 7 and last < first


def test_sample_writes_grid_and_files_marked_synthetic(brains, tmp_path, capsys):
    ck = brains / "trained"
    assert main(["sample", "--checkpoint", str(ck), "--output", str(tmp_path / "png"), "--num", "5", "--steps", "7",
                 "--seed", "3", "--no-progress"]) == 0
    assert "grid.png and 5 sample(s), 7 steps" in capsys.readouterr().out
    files = sorted(p.name for p in (tmp_path / "png").iterdir() if p.suffix == ".png")
    # no --label: classes cycle through the sorted names
    assert files == ["grid.png", "sample_0000_axial.png", "sample_0001_coronal.png", "sample_0002_sagittal.png",
                     "sample_0003_axial.png", "sample_0004_coronal.png"]
    big = np.asarray(Image.open(tmp_path / "png" / "grid.png"))
    k = -(-512 // (2 + 3 * 18))  # enlarged for viewing by the smallest integer factor reaching 512 px wide
    assert big.shape == (k * (2 + 2 * 18), k * (2 + 3 * 18)) and big.shape[1] >= 512
    grid = big[::k, ::k]
    assert np.array_equal(np.repeat(np.repeat(grid, k, 0), k, 1), big)  # nearest: each pixel a k x k block
    assert grid.shape == (2 + 2 * 18, 2 + 3 * 18)  # 3 columns x 2 rows of 16 px tiles, 2 px gaps
    one = np.asarray(Image.open(tmp_path / "png" / "sample_0001_coronal.png"))
    assert one.shape == (16, 16) and np.array_equal(grid[2:18, 20:36], one)  # tile 1 = sample 1, levels unchanged
    for name in ("grid.png", "sample_0000_axial.png"):
        assert MARKER_SYNTHETIC in Image.open(tmp_path / "png" / name).text["Description"]
    record = json.loads((tmp_path / "png" / "grid.json").read_text())  # provenance sidecar
    model_file = resolve_model_file(ck)
    assert record["steps"] == 7 and record["seed"] == 3 and record["command"].startswith("meddiff sample")
    assert record["checkpoint_sha256"] == hashlib.sha256(model_file.read_bytes()).hexdigest()
    # a sample depends on its seed only: --label and --batch-size do not change sample 1 of the same class
    assert main(["sample", "--checkpoint", str(ck), "--output", str(tmp_path / "dcm"), "--num", "2", "--steps", "7",
                 "--seed", "3", "--label", "coronal", "--format", "dicom", "--batch-size", "1"]) == 0
    ds = pydicom.dcmread(tmp_path / "dcm" / "sample_0001_coronal.dcm")
    assert MARKER_SYNTHETIC in (ds.DerivationDescription, ds.ImageComments)
    assert np.array_equal(ds.pixel_array.astype(np.int64) * int(ds.get("RescaleSlope", 1)) + int(ds.get("RescaleIntercept", 0)),
                          one.astype(np.int64))
    assert main(["sample", "--checkpoint", str(ck), "--output", str(tmp_path / "nii"), "--num", "1", "--steps", "2",
                 "--label", "2", "--format", "nifti"]) == 0
    assert (tmp_path / "nii" / "sample_0000_sagittal.nii.gz").is_file()


@pytest.mark.parametrize("extra, message", [
    (["--label", "oblique"], "--label 'oblique': expected one of the model's classes ['axial', 'coronal', 'sagittal']"),
    (["--steps", "0"], "--steps 0: expected an integer >= 1"),
    (["--num", "0"], "--num 0: expected >= 1"),
    (["--input", "x.png"], "trained without an image condition, which generates images"),
])
def test_sample_vdm_errors(brains, tmp_path, capsys, extra, message):
    assert main(["sample", "--checkpoint", str(brains / "trained"), "--output", str(tmp_path), *extra]) == 2
    assert message in capsys.readouterr().err


def test_likelihood_on_heldout_brain_is_finite_and_lower_after_training(brains, tmp_path, capsys):
    res = {}
    for name in ("trained", "untrained"):
        out = tmp_path / name
        assert main(["evaluate", "--likelihood", "--checkpoint", str(brains / name), "--prepared", str(brains / "colin"),
                     "--split", "test", "--out", str(out)]) == 0
        text = capsys.readouterr().out
        assert "on 140 slices of split 'test'" in text and "diffusion" in text
        res[name] = json.loads((out / "likelihood.json").read_text())["bits_per_dim"]
        rows = (out / "likelihood_per_slice.csv").read_text().splitlines()
        assert rows[0] == "case_id,reconstruction,latent,diffusion,total" and len(rows) == 141
    for r in res.values():
        assert all(np.isfinite(r[k]["mean"]) and r[k]["stderr"] > 0 for k in r)
        assert r["total"]["mean"] == pytest.approx(r["reconstruction"]["mean"] + r["latent"]["mean"] + r["diffusion"]["mean"])
    t, u = res["trained"]["total"], res["untrained"]["total"]
    assert t["mean"] + 2 * np.hypot(t["stderr"], u["stderr"]) < u["mean"]


def test_likelihood_argument_errors_name_what_is_missing(brains, tmp_path, capsys):
    assert main(["evaluate", "--likelihood", "--checkpoint", str(brains / "trained")]) == 2
    assert "--likelihood needs --checkpoint CKPT and --prepared DIR" in capsys.readouterr().err
    assert main(["evaluate", "--likelihood", "--checkpoint", str(brains / "trained"), "--prepared", str(brains / "mni"),
                 "--split", "test"]) == 2
    assert "split 'test'" in capsys.readouterr().err
    assert main(["evaluate", "--truth", str(tmp_path)]) == 2
    assert "--pred and --truth are required" in capsys.readouterr().err


def test_likelihood_draws_average_independent_draws_per_slice(brains, tmp_path, capsys):
    """--draws K: the per-slice values are means of K draws, so they spread less across slices'
    draws than single draws do, while the mean over slices stays within the standard errors."""
    res = {}
    for k in (1, 4):
        out = tmp_path / f"d{k}"
        assert main(["evaluate", "--likelihood", "--checkpoint", str(brains / "trained"), "--prepared", str(brains / "colin"),
                     "--split", "test", "--draws", str(k), "--out", str(out)]) == 0
        capsys.readouterr()
        res[k] = json.loads((out / "likelihood.json").read_text())
    assert res[1]["draws"] == 1 and res[4]["draws"] == 4
    d1, d4 = res[1]["bits_per_dim"]["diffusion"], res[4]["bits_per_dim"]["diffusion"]
    assert d4["stderr"] < d1["stderr"]
    assert abs(d4["mean"] - d1["mean"]) < 3 * np.hypot(d1["stderr"], d4["stderr"])
    assert main(["evaluate", "--likelihood", "--checkpoint", str(brains / "trained"), "--prepared", str(brains / "colin"),
                 "--draws", "0"]) == 2
    assert "--draws 0: expected >= 1" in capsys.readouterr().err


def test_image_conditional_vdm_restores_an_input_like_a_ddpm(brains, tmp_path, capsys):
    """An SR x2 VDM with the U-Net score network and the image condition, trained a few steps:
    `meddiff sample --input` writes a restoration on the x2 grid, reproducible per seed, through
    each sampler; a generator (no image condition) refuses --input, naming what is needed."""
    ck = tmp_path / "img"
    with torch.random.fork_rng():
        assert main(["train", "--no-progress", "--out", str(ck), "--config", "configs/vdm_brain_unet.yaml",
                     f"data.prepared={brains / 'mni'}", "data.size=16", "model.channels=[8,16]", "model.norm_groups=4",
                     "model.attention_levels=[false,false]", "task.kind=sr", "task.sr_factor=2.0", "vdm.image_condition=true",
                     "vdm.gamma=fixed_linear", "train.steps=3", "train.batch_size=4", "train.device=cpu"]) == 0
    capsys.readouterr()
    lowres = np.random.default_rng(0).uniform(0, 100, (8, 8)).astype(np.float32)
    np.save(tmp_path / "lr.npy", lowres)
    outs = {}
    for name, extra in (("a", ["--sampler", "ancestral", "--steps", "5"]), ("b", ["--sampler", "ancestral", "--steps", "5"]),
                        ("d", ["--sampler", "dpm_solver_pp", "--steps", "4"]), ("s", ["--sampler", "ancestral", "--steps", "5", "--seed", "1"])):
        assert main(["sample", "--checkpoint", str(ck), "--input", str(tmp_path / "lr.npy"), "--output", str(tmp_path / name),
                     "--no-progress", *extra]) == 0
        assert "wrote 1 file(s)" in capsys.readouterr().out
        (f,) = [p for p in (tmp_path / name).rglob("*_restored.*") if p.suffix != ".json"]
        outs[name] = read_volume(f).array
    assert all(o.shape == (16, 16) and np.isfinite(o).all() for o in outs.values())
    assert np.array_equal(outs["a"], outs["b"]) and not np.array_equal(outs["a"], outs["s"])
    assert not np.array_equal(outs["a"], outs["d"])
    assert main(["sample", "--checkpoint", str(brains / "trained"), "--input", str(tmp_path / "lr.npy"),
                 "--output", str(tmp_path / "x")]) == 2
    assert "trained without an image condition" in capsys.readouterr().err
