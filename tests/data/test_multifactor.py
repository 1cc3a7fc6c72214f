"""task.sr_factors: each training image gets one of the factors, exactly that factor's degradation."""

import math

import nibabel as nib
import numpy as np
import pytest
import torch

from meddiff.config import TaskConfig
from meddiff.data.degrade import PAPER_SR_FACTORS, MultiFactorSR, SuperResolution, build_degradation
from meddiff.data.samples import samples_dir
from meddiff.errors import ConfigError


@pytest.fixture(scope="module")
def slices():
    """12 real 64x64 Colin27 crops in [-1, 1], [12, 1, 64, 64]."""
    data = np.asarray(nib.load(samples_dir("colin27") / "colin27" / "axial.nii.gz").dataobj, dtype=np.float32)
    z = np.linspace(data.shape[2] * 0.3, data.shape[2] * 0.7, 12).astype(int)
    img = np.stack([data[:, :, k].T for k in z])
    c0, c1 = (img.shape[1] - 64) // 2, (img.shape[2] - 64) // 2
    img = img[:, c0:c0 + 64, c1:c1 + 64]
    return torch.from_numpy(2 * (img - img.min()) / (img.max() - img.min()) - 1)[:, None]


def test_each_image_gets_exactly_one_factors_degradation(slices):
    deg = MultiFactorSR(PAPER_SR_FACTORS)
    cond, mask = deg(slices, torch.Generator().manual_seed(3))
    which = deg.draw_factors(len(slices), torch.Generator().manual_seed(3), slices)
    assert torch.equal(mask, torch.ones_like(slices))
    for i in range(len(slices)):
        f = PAPER_SR_FACTORS[int(which[i])]
        expected, _ = SuperResolution(f)(slices[i:i + 1])
        assert torch.equal(cond[i:i + 1], expected), (i, f)
    assert len(set(which.tolist())) >= 4  # 12 draws over 6 factors cover most of them


def test_factor_draws_are_uniform_and_seeded():
    deg = MultiFactorSR((2.0, 4.0, 8.0))
    like = torch.zeros(1)
    a = deg.draw_factors(30000, torch.Generator().manual_seed(0), like)
    b = deg.draw_factors(30000, torch.Generator().manual_seed(0), like)
    assert torch.equal(a, b)
    freq = torch.bincount(a, minlength=3).double() / 30000
    assert torch.all((freq - 1 / 3).abs() < 4 * math.sqrt((1 / 3) * (2 / 3) / 30000))


def test_build_degradation_uses_the_set_only_for_training():
    task = TaskConfig(kind="sr", sr_factor=4.0, sr_factors=(2.0, 8.0))
    assert isinstance(build_degradation(task, training=True), MultiFactorSR)
    sampling = build_degradation(task)
    assert isinstance(sampling, SuperResolution) and sampling.factor == 4.0
    assert isinstance(build_degradation(TaskConfig(kind="sr"), training=True), SuperResolution)


@pytest.mark.parametrize("factors, message", [((), "at least one factor"), ((4.0, 0.5), "factor > 1")])
def test_bad_factor_sets_are_config_errors(factors, message):
    with pytest.raises(ConfigError, match=message):
        MultiFactorSR(factors)
