"""Labelled slices (meddiff.downstream.slices): cut exactly like the shipped samples, labels by the stated rule."""

import numpy as np
import pytest

from meddiff.downstream.slices import ORIENTATIONS, gap_mask, holdout_mask, level_of, tissue_label


def test_tissue_label_is_the_argmax_rule():
    gm = np.array([0.6, 0.2, 0.3, 0.0, 0.45])
    wm = np.array([0.3, 0.7, 0.3, 0.0, 0.1])
    # other = 1 - gm - wm = 0.1, 0.1, 0.4, 1.0, 0.45 -> ties go to the lower index (numpy argmax)
    assert tissue_label(gm, wm).tolist() == [1, 2, 0, 0, 0]


def test_level_thirds():
    assert [level_of(p) for p in (0.0, 0.33, 1 / 3, 0.66, 2 / 3, 1.0)] == [0, 0, 1, 1, 2, 2]


def test_mni152_slices_equal_the_shipped_samples():
    """The first kept slice of each orientation, prepared from the nilearn volume, equals the shipped
    sample's first slice after the same preparation (same cut, orientation and normalisation)."""
    pytest.importorskip("nilearn")
    from meddiff.data.normalise import Normalisation
    from meddiff.data.samples import samples_dir
    from meddiff.data.slices import to_model_slice
    from meddiff.downstream.slices import load_mni152
    from meddiff.io import read_volume

    s = load_mni152()
    vols = {o: read_volume(samples_dir("mni152") / "icbm152_2009a" / f"{o}.nii.gz").array for o in ORIENTATIONS}
    norm = Normalisation.from_arrays(list(vols.values()))
    for k, o in enumerate(ORIENTATIONS):
        # make_samples.py keeps every 2nd slice of the box starting at its edge, so its first slice is
        # the first kept one with an even box index: one of our first two slices
        first = np.flatnonzero(s.orientation == k)[:2]
        shipped = to_model_slice(np.asarray(norm.forward(vols[o][0]), np.float32), 128)[0]
        assert any(np.array_equal(s.images[i], shipped) for i in first), o
    test, gap = holdout_mask(s), gap_mask(s)
    assert not (test & gap).any()
    for k in range(3):  # the held-out slab is 20% of each orientation's slices, contiguous
        pos = s.position[test & (s.orientation == k)]
        n = (s.orientation == k).sum()
        assert abs(test[s.orientation == k].sum() / n - 0.2) < 0.02 and pos.min() >= 0.4 and pos.max() < 0.6
