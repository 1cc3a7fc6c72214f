"""Small real inputs for the command-line tests: a 32x32 crop of a Colin27 axial slice as NPY."""

from __future__ import annotations

import numpy as np

from meddiff.data.samples import samples_dir
from meddiff.io import read_volume


def small_input(tmp_path):
    vol = read_volume(samples_dir("colin27") / "colin27" / "axial.nii.gz")
    path = tmp_path / "lowres.npy"
    np.save(path, np.asarray(vol.array[vol.shape[0] // 2, 40:72, 40:72], np.float32))
    return path
