"""noise="shared": one noise per volume (meddiff.samplers.noise) in restore() and `meddiff sample`."""

import pytest
import torch

from meddiff.errors import InputError
from meddiff.samplers.run import restore

from test_run import conds, tiny_denoiser


@pytest.mark.parametrize("sampler, opts", [("dpm_solver_pp", {}), ("ancestral", {}), ("ddim", {"eta": 1.0})])
def test_shared_noise_gives_identical_slices_identical_results(sampler, opts):
    den = tiny_denoiser()
    c = conds(n=4)
    c[2] = c[1]  # two identical slices
    shared = restore(den, c, sampler=sampler, steps=3, samples=2, noise="shared", progress=False, **opts)
    torch.testing.assert_close(shared[:, 2], shared[:, 1], rtol=0, atol=1e-6)
    indep = restore(den, c, sampler=sampler, steps=3, samples=2, noise="independent", progress=False, **opts)
    assert (indep[:, 2] - indep[:, 1]).abs().max() > 1e-3
    # per-sample independence is kept: sample 0 and sample 1 of a slice differ
    assert (shared[0, 1] - shared[1, 1]).abs().max() > 1e-3


def test_shared_noise_does_not_depend_on_batch_size_and_keeps_slice_zero():
    den = tiny_denoiser()
    c = conds(n=5)
    a = restore(den, c, sampler="ancestral", steps=3, batch_size=1, noise="shared", progress=False)
    b = restore(den, c, sampler="ancestral", steps=3, batch_size=4, noise="shared", progress=False)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    ind = restore(den, c, sampler="ancestral", steps=3, batch_size=2, progress=False)
    torch.testing.assert_close(a[:, 0], ind[:, 0], rtol=0, atol=1e-5)  # slice 0's seed in both modes


def test_unknown_noise_mode_is_refused():
    with pytest.raises(InputError, match="noise 'joint'"):
        restore(tiny_denoiser(), conds(n=1), steps=2, noise="joint", progress=False)
