"""Generation metrics (meddiff.metrics.generation): k-NN precision/recall against a brute-force
computation, the small-n KID rule, and `meddiff evaluate --generated --real` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from meddiff.cli import main
from meddiff.data.prepare import PrepareOptions, prepare
from meddiff.data.samples import samples_dir
from meddiff.metrics.generation import kid_row, knn_radii, precision_recall, read_image_set
from meddiff.vdm.generate import upscale_nearest


def brute_force_precision_recall(real, gen, k):
    """Kynkaanniemi et al. 2019 eq. 1-3 written as plain loops."""
    def radius(x, i, feats):
        d = sorted(float(np.linalg.norm(x - feats[j])) for j in range(len(feats)) if j != i)
        return d[k - 1]

    def inside(q, feats):
        return any(np.linalg.norm(q - feats[j]) <= radius(feats[j], j, feats) for j in range(len(feats)))

    return (np.mean([inside(g, real) for g in gen]), np.mean([inside(r, gen) for r in real]))


@pytest.mark.parametrize("k", [1, 3])
def test_precision_recall_equals_brute_force_on_a_toy_set(k):
    rng = np.random.default_rng(0)
    real = rng.normal(size=(25, 4))
    gen = rng.normal(loc=0.7, scale=0.6, size=(18, 4))  # shifted and narrower: precision != recall
    p, r = precision_recall(real, gen, k)
    bp, br = brute_force_precision_recall(real, gen, k)
    assert (p, r) == pytest.approx((bp, br), abs=1e-12)
    assert 0 < p < 1 and 0 < r < 1 and p != r


def test_knn_radius_excludes_the_point_itself_and_needs_more_than_k_points():
    pts = np.array([[0.0], [1.0], [3.0]])
    assert knn_radii(pts, 1).tolist() == [1.0, 1.0, 2.0]
    assert knn_radii(pts, 2).tolist() == [3.0, 2.0, 3.0]
    with pytest.raises(Exception, match="needs more than k samples"):
        knn_radii(pts, 3)


def test_a_set_scored_against_itself_has_full_precision_and_recall():
    f = np.random.default_rng(1).normal(size=(12, 6))
    assert precision_recall(f, f, 3) == (1.0, 1.0)


def test_negative_kid_is_reported_as_n_too_small():
    value, note = kid_row(-0.004, 0.01, 10)
    assert value == "n too small" and "-0.0040" in note and "n = 10" in note
    assert kid_row(0.083, 0.01, 10)[0] == "0.0830 +- 0.0100"


def test_upscale_nearest_repeats_pixels_to_at_least_512_wide():
    img = np.arange(12.0).reshape(3, 4)
    big = upscale_nearest(img)
    assert big.shape == (384, 512) and np.array_equal(big[::128, ::128], img)


@pytest.fixture(scope="module")
def vdm_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen_eval")
    prepare(samples_dir("mni152"), root / "mni", PrepareOptions(size=16), progress=False)
    prepare(samples_dir("colin27"), root / "colin", PrepareOptions(size=16, split=(0, 0, 1)), progress=False)
    with torch.random.fork_rng():
        assert main(["train", "--no-progress", "--out", str(root / "run"), "--config", "configs/vdm_brain_unet.yaml",
                     f"data.prepared={root / 'mni'}", "model.channels=[8,16]", "model.norm_groups=4", "data.size=16",
                     "train.steps=4", "train.ckpt_every=4", "train.batch_size=8", "train.device=cpu",
                     "train.threads=1", "vdm.gamma=fixed_linear"]) == 0
    assert main(["sample", "--checkpoint", str(root / "run"), "--output", str(root / "samples"), "--num", "12",
                 "--steps", "4", "--no-progress"]) == 0
    (root / "real").mkdir()
    for i, a in enumerate(np.load(root / "colin" / "test.npy")[::7][:16]):  # 16 held-out slices as 8-bit PNG
        Image.fromarray(np.round((np.asarray(a).reshape(16, 16) + 1) * 127.5).astype(np.uint8)).save(root / "real" / f"{i}.png")
    return root


def test_evaluate_generated_against_real_writes_one_table_and_viewing_grids(vdm_run, capsys):
    root = vdm_run
    out = root / "eval"
    assert main(["evaluate", "--generated", str(root / "samples"), "--real", str(root / "real"), "--checkpoint",
                 str(root / "run"), "--prepared", str(root / "colin"), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for metric in ("| FID |", "| KID |", "| precision |", "| recall |", "| bits/dim (held out) |"):
        assert metric in text
    assert "biased upwards below 50 images" in text and "generated n = 12, real n = 16" in text
    doc = json.loads((out / "generation.json").read_text())
    assert doc["n_generated"] == 12 and doc["bits_per_dim"] > 0 and 0 <= doc["precision"] <= 1
    for name in ("grid_generated.png", "grid_real.png"):
        assert Image.open(out / name).size[0] >= 512
    # the samples of a 4-step model are noise: far from the real films, while real brains against
    # themselves are at distance 0 with full precision and recall
    assert main(["evaluate", "--generated", str(root / "real"), "--real", str(root / "real"), "--out",
                 str(root / "self")]) == 0
    same = json.loads((root / "self" / "generation.json").read_text())
    assert same["precision"] == 1.0 and same["recall"] == 1.0 and same["fid"] < 1e-3
    assert doc["fid"] > 50 and doc["precision"] < same["precision"]


def test_generated_png_levels_map_back_onto_minus_one_one(vdm_run):
    imgs = read_image_set(vdm_run / "samples")
    assert len(imgs) == 12 and imgs[0].shape == (16, 16)  # grid.png is skipped
    assert all(-1.0 <= float(i.min()) and float(i.max()) <= 1.0 for i in imgs)


# --------------------------------------------------------------------------- sets at unequal sizes

def test_real_images_are_resampled_to_the_generated_size_and_the_table_says_so():
    from meddiff.metrics.generation import match_real_to_generated

    rng = np.random.default_rng(0)
    gen = [rng.uniform(-1, 1, (32, 32)).astype(np.float32) for _ in range(3)]
    real = [np.kron(rng.uniform(-1, 1, (32, 32)), np.ones((8, 8))).astype(np.float32) for _ in range(2)]
    out, note = match_real_to_generated(gen, real)
    assert all(im.shape == (32, 32) for im in out)
    np.testing.assert_allclose(out[0], real[0][::8, ::8], atol=1e-6)  # area averaging of constant 8x8 blocks
    assert "256x256" in note and "32x32" in note
    same, none = match_real_to_generated(gen, gen)
    assert none == "" and same is gen


def test_unequal_sizes_are_refused_when_asked_and_mixed_or_other_shapes_always():
    from meddiff.errors import InputError
    from meddiff.metrics.generation import match_real_to_generated

    gen = [np.zeros((32, 32), np.float32)] * 2
    with pytest.raises(InputError, match="256x256.*32x32"):
        match_real_to_generated(gen, [np.zeros((256, 256), np.float32)] * 2, "refuse")
    with pytest.raises(InputError, match="2 sizes"):
        match_real_to_generated(gen + [np.zeros((64, 64), np.float32)], gen)
    with pytest.raises(InputError, match="aspect ratio"):
        match_real_to_generated(gen, [np.zeros((256, 128), np.float32)] * 2)
