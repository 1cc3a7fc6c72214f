"""Chest radiographs (issue 19): one film stored as 16-bit MONOCHROME1 DICOM, 16-bit MONOCHROME2
DICOM and 8-bit PNG is prepared to the same [-1, 1] image by the percentile normalisation the
presets state; and each chest X-ray preset trains a few steps and samples on that real film."""

from __future__ import annotations

import csv

import numpy as np
import pydicom
import pytest
import torch
import yaml
from PIL import Image

from meddiff import config as config_mod
from meddiff.cli import main
from meddiff.data.samples import samples_dir
from meddiff.io import read_volume

FILM = samples_dir("cxr") / "rg1" / "rg1_downsampled_x4.dcm"  # pydicom-data's RG1 chest CR, MONOCHROME1
PRESETS = ["vdm_cxr32", "vdm_cxr64", "vdm_cxr128", "denoise_cxr"]


@pytest.fixture(scope="module")
def encodings(tmp_path_factory):
    """The film in three encodings (one patient folder each), prepared at 64 px with 0.5/99.5 percentiles."""
    root = tmp_path_factory.mktemp("cxr_enc")
    ds = pydicom.dcmread(FILM)
    (root / "in" / "mono1").mkdir(parents=True)
    ds.save_as(root / "in" / "mono1" / "film.dcm")
    inv = pydicom.dcmread(FILM)
    px = inv.pixel_array.astype(np.int64)
    inv.PixelData = (px.max() + px.min() - px).astype(np.uint16).tobytes()  # same film, display polarity stored
    inv.PhotometricInterpretation = "MONOCHROME2"
    (root / "in" / "mono2").mkdir()
    inv.save_as(root / "in" / "mono2" / "film.dcm")
    shown = read_volume(FILM).array  # MONOCHROME1 already inverted by the reader: bone bright
    u8 = np.round(255 * (shown - shown.min()) / (shown.max() - shown.min())).astype(np.uint8)
    (root / "in" / "png8").mkdir()
    Image.fromarray(u8).save(root / "in" / "png8" / "film.png")
    assert main(["prepare", str(root / "in"), str(root / "prep"), "--size", "64", "--keep-patient-tags", "--clip-percentiles", "0.5", "99.5",
                 "--split", "1", "0", "0", "--no-progress"]) == 0
    arr = np.load(root / "prep" / "train.npy").reshape(-1, 64, 64)
    with open(root / "prep" / "manifest.csv", newline="") as f:
        pids = [r["patient_id"] for r in csv.DictReader(f) if r["split"] == "train"]
    return {p: arr[i] for i, p in enumerate(pids)}


def test_monochrome1_and_monochrome2_dicom_prepare_to_the_same_image(encodings):
    a, b = encodings["mono1"], encodings["mono2"]
    assert np.abs(a - b).max() < 1e-5
    assert a.min() >= -1.0 and 0.9 < a.max() <= 1.0  # the 99.5th percentile window (then resized)
    assert a[32, 5:20].mean() < a[58, 20:44].mean()  # lung field darker than the subdiaphragmatic region


def test_8bit_png_prepares_to_the_dicom_image_up_to_its_quantisation(encodings):
    a, c = encodings["mono1"], encodings["png8"]
    assert np.corrcoef(a.ravel(), c.ravel())[0, 1] > 0.999
    assert np.abs(a - c).mean() < 0.02  # 8-bit steps are ~0.01 of the [-1, 1] range after the window


@pytest.mark.parametrize("name", PRESETS)
def test_preset_states_widths_and_keeps_attention_at_16px_or_below(name):
    cfg = config_mod.from_dict(yaml.safe_load(open(f"configs/{name}.yaml")))
    size = cfg.data.crop or cfg.data.size
    res = [size // 2**i for i in range(len(cfg.model.channels))]
    assert all(r <= 16 for r, att in zip(res, cfg.model.attention_levels) if att), (name, res)
    assert cfg.train.ema_warmup and cfg.train.threads == 1
    assert "s per step" in open(f"configs/{name}.yaml").read() and "SECONDS_PER_STEP" not in open(f"configs/{name}.yaml").read()


@pytest.mark.parametrize("name", PRESETS)
def test_preset_trains_a_few_steps_on_the_real_film_and_samples(name, tmp_path):
    cfg = yaml.safe_load(open(f"configs/{name}.yaml"))
    size = cfg["data"]["size"]
    prep = tmp_path / "prep"
    assert main(["prepare", str(samples_dir("cxr")), str(prep), "--size", str(size), "--clip-percentiles", "0.5", "99.5",
                 "--split", "1", "0", "0", "--no-progress"]) == 0
    with torch.random.fork_rng():
        assert main(["train", "--no-progress", "--config", f"configs/{name}.yaml", "--out", str(tmp_path / "run"),
                     f"data.prepared={prep}", "train.steps=2", "train.batch_size=2", "train.ckpt_every=2",
                     "train.device=cpu"]) == 0
    out = tmp_path / "out"
    if cfg.get("objective") == "vdm":
        assert main(["sample", "--checkpoint", str(tmp_path / "run"), "--output", str(out), "--num", "2", "--steps", "2",
                     "--no-progress", "--weights", "raw"]) == 0
        assert np.asarray(Image.open(out / "sample_0001.png")).shape == (size, size)
    else:
        assert main(["sample", "--checkpoint", str(tmp_path / "run"), "--input", str(FILM), "--output", str(out),
                     "--steps", "2", "--clip-percentiles", "0.5", "99.5", "--no-progress"]) == 0
        written = list(out.rglob("*.dcm"))
        assert len(written) == 1 and pydicom.dcmread(written[0]).pixel_array.shape == (489, 460)
