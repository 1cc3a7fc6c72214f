"""Dice of the shipped segmenter per plane (meddiff.metrics.volume): upright planes, and Dice properties."""

import itertools

import numpy as np
import pytest

from meddiff.metrics.volume import plane_dice, segmenter_planes, upright

AXES = {"x": "RL", "y": "AP", "z": "SI"}


@pytest.mark.parametrize("normal", ["x", "y", "z"])
def test_upright_puts_superior_or_anterior_at_the_top_and_right_or_anterior_to_the_right(normal):
    """Every orientation of a plane's two axes: after upright the rows run down from S (A for an axial
    plane) and the columns toward R (A for a sagittal plane)."""
    groups = [g for g in "xyz" if g != normal]
    vertical, horizontal = ("y", "x") if normal == "z" else ("z", "x" if normal == "y" else "y")
    for order, signs in itertools.product(itertools.permutations(groups), itertools.product((0, 1), repeat=2)):
        codes = tuple(AXES[g][s] for g, s in zip(order, signs))
        n0, n1 = 5, 7
        world = {g: np.zeros((n0, n1)) for g in "xyz"}
        for k, (g, s) in enumerate(zip(order, signs)):
            idx = np.arange((n0, n1)[k], dtype=float) * (1 if s == 0 else -1)  # letter 0 = the positive direction
            world[g] = world[g] + (idx[:, None] if k == 0 else idx[None, :])
        plane_v, _ = upright(world[vertical], codes)
        plane_h, _ = upright(world[horizontal], codes)
        assert (np.diff(plane_v, axis=0) < 0).all() and (np.diff(plane_v, axis=1) == 0).all(), codes
        assert (np.diff(plane_h, axis=1) > 0).all() and (np.diff(plane_h, axis=0) == 0).all(), codes


def colin_crop():
    from meddiff.data.normalise import Normalisation
    from meddiff.data.samples import samples_dir
    from meddiff.io import read_volume

    vol = read_volume(samples_dir("colin27") / "colin27" / "axial.nii.gz")
    a = vol.array[14:30, 20:180, 10:150]
    return Normalisation.from_arrays([a]).forward(a.astype(np.float64)).astype(np.float32), vol.spacing


def test_segmenter_planes_are_square_upright_and_padded_with_background():
    vol, spacing = colin_crop()
    p = segmenter_planes(vol, 1, ("S", "P", "R"), spacing)  # coronal reformats: 16 slices 3 mm apart as rows
    assert p.shape == (160, 1, 128, 128) and float(p.min()) >= -1.0001 and float(p.max()) <= 1.0001
    assert float(p[:, 0, :5].mean()) == pytest.approx(-1.0, abs=1e-4)  # 48 mm of rows on a 140 mm side: padding above


def test_plane_dice_is_one_for_the_truth_and_drops_with_blur():
    import torch

    from meddiff.downstream import Segmenter

    torch.set_num_threads(1)
    vol, spacing = colin_crop()
    seg = Segmenter.load()
    codes = ("S", "P", "R")
    assert plane_dice(vol, vol, 0, seg, codes, spacing) == 1.0
    blurred = torch.nn.functional.avg_pool3d(torch.from_numpy(vol)[None, None], 5, 1, 2)[0, 0].numpy()
    d = plane_dice(blurred, vol, 0, seg, codes, spacing)
    assert 0.3 < d < 0.95, d
