"""Shipped downstream models on real brain MRI: the segmenter against MNI152 tissue labels on the
held-out slab, its quality dependence, the orientation classifier on Colin27; loading errors."""

import json

import numpy as np
import pytest
import torch

from meddiff.data.degrade import SuperResolution
from meddiff.downstream import CLS_FORMAT, SEG_FORMAT, Classifier, Segmenter, accuracy, dice, mean_dice
from meddiff.downstream.models import CLS_FILE, SEG_FILE, write_checkpoint
from meddiff.downstream.nets import SegUNet
from meddiff.downstream.slices import ORIENTATIONS, TISSUE_CLASSES, holdout_mask, load_colin27_samples
from meddiff.errors import InputError

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def mni_heldout():
    """12 evenly spaced slices of the held-out central slab (4 per orientation) with their tissue labels."""
    pytest.importorskip("nibabel")
    from meddiff.downstream.slices import load_mni152, nilearn_data_dir

    try:
        nilearn_data_dir()
    except InputError:
        pytest.skip("nilearn (dev extra) provides the MNI152 tissue maps")
    s = load_mni152()
    test = holdout_mask(s)
    pick = np.concatenate([np.flatnonzero(test & (s.orientation == k))[[2, 8, 14, 20]] for k in range(3)])
    return torch.from_numpy(s.images[pick])[:, None], torch.from_numpy(s.tissue[pick])


def test_shipped_files_are_small_and_described():
    for path, fmt in ((SEG_FILE, SEG_FORMAT), (CLS_FILE, CLS_FORMAT)):
        assert path.stat().st_size < 1.5e6
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
            assert all(f.get_tensor(k).dtype == torch.float16 for k in f.keys())
        assert meta["format"] == fmt and json.loads(meta["recipe"])["seed"] == 0
    seg, clf = Segmenter.load(), Classifier.load()
    assert seg.class_names == TISSUE_CLASSES == ("other", "grey_matter", "white_matter") and seg.n_classes == 3
    assert clf.class_names == ORIENTATIONS and clf.n_classes == 3


def test_segmenter_on_heldout_mni152_slab(mni_heldout):
    x, labels = mni_heldout
    seg = Segmenter.load()
    pred = seg(x)
    assert pred.shape == labels.shape and pred.dtype == torch.long and int(pred.min()) >= 0 and int(pred.max()) <= 2
    d = dice(pred, labels, 3)
    # measured on these 12 slices (2026-11-29): GM 0.915, WM 0.883 on average, every slice >= 0.84 except the
    # sagittal slice next to the midline (419 white-matter pixels: GM 0.64, WM 0.44); thresholds leave a margin
    assert float(d[:, 0].mean()) > 0.85 and float(d[:, 1].mean()) > 0.82
    assert float(np.median(d.numpy())) > 0.9 and float(d.min()) > 0.35


def test_segmentation_gets_worse_with_the_sr_factor(mni_heldout):
    x, labels = mni_heldout
    seg = Segmenter.load()
    scores = {f: mean_dice(seg(SuperResolution(f, "bicubic")(x)[0]), labels, 3).mean().item() for f in (2 * 2 ** 0.5, 8.0, 16.0)}
    clean = mean_dice(seg(x), labels, 3).mean().item()
    assert clean > scores[2 * 2 ** 0.5] > scores[8.0] > scores[16.0]
    assert scores[2 * 2 ** 0.5] - scores[16.0] > 0.2  # x16 (8 x 8 measurement) loses most of the tissue boundary


def test_classifier_on_colin27_orientation():
    c = load_colin27_samples()
    clf = Classifier.load()
    logits = torch.cat([clf(torch.from_numpy(c.images[i:i + 35])[:, None]) for i in range(0, len(c.images), 35)])
    assert logits.shape == (140, 3) and logits.dtype == torch.float32
    acc = accuracy(logits, torch.from_numpy(c.orientation))
    assert acc >= 0.90  # measured 0.957 (134/140) on this other anatomy


def test_round_trip_matches_the_float16_weights(tmp_path):
    torch.manual_seed(0)
    net = SegUNet(3, (8, 16))
    path = write_checkpoint(tmp_path / "s.safetensors", net, SEG_FORMAT, ("a", "b", "c"), {"seed": 1})
    seg = Segmenter.load(path)
    assert seg.class_names == ("a", "b", "c") and seg.recipe == {"seed": 1}
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(p.half().float())
        x = torch.rand(2, 1, 16, 16) * 2 - 1
        assert torch.equal(seg.logits(x), net.eval()(x))
    with pytest.raises(InputError, match=r"not a multiple of 2"):
        seg(torch.zeros(1, 1, 15, 16))
    with pytest.raises(InputError, match=r"expected images \[B, 1, H, W\]"):
        seg(torch.zeros(1, 16, 16))


def test_load_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(InputError, match=f"{missing}: no such file; expected a meddiff-seg-v1"):
        Segmenter.load(missing)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    with pytest.raises(InputError, match=f"{junk}: not a readable safetensors file"):
        Classifier.load(junk)
    with pytest.raises(InputError, match=f"{CLS_FILE}: format 'meddiff-cls-v1'; expected 'meddiff-seg-v1'"):
        Segmenter.load(CLS_FILE)
    other = tmp_path / "other.safetensors"
    write_checkpoint(other, SegUNet(3, (8, 16)), CLS_FORMAT, ("a", "b", "c"), {})
    with pytest.raises(InputError, match=f"{other}: weights do not fit"):
        Classifier.load(other)
