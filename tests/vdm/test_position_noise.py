"""VDM training noise keyed by global position: a split global batch draws the same noise as the whole."""

import torch

from meddiff.vdm.vlb import position_noise


def test_split_batches_draw_the_noise_of_the_whole_global_batch():
    step, g, shape = 7, 8, (8, 1, 4, 4)
    positions = torch.arange(step * g, step * g + g)
    whole = position_noise(0, step, positions, g, shape)
    halves = [position_noise(0, step, positions[r * 4:(r + 1) * 4], g, (4, 1, 4, 4)) for r in range(2)]
    for i in range(3):
        assert torch.equal(whole[i], torch.cat([h[i] for h in halves]))


def test_antithetic_times_of_a_step_are_evenly_spaced_with_one_offset():
    step, g = 3, 16
    t, eps, eps_0 = position_noise(5, step, torch.arange(step * g, step * g + g), g, (g, 2))
    gaps = torch.diff(torch.sort(t).values)
    assert torch.allclose(gaps, torch.full_like(gaps, 1 / g), atol=1e-12)
    assert bool((t >= 0).all() and (t < 1).all())
    assert not torch.equal(eps, eps_0)
    t_next, _, _ = position_noise(5, step + 1, torch.arange((step + 1) * g, (step + 2) * g), g, (g, 2))
    assert float((t_next.min() - t.min()).abs()) > 1e-9  # a new offset every step


def test_iid_times_are_per_position_and_uniformly_spread():
    g = 4000
    t, _, _ = position_noise(1, 0, torch.arange(g), g, (g, 1), antithetic=False)
    assert abs(float(t.mean()) - 0.5) < 4 * (1 / 12) ** 0.5 / g ** 0.5
    t2, _, _ = position_noise(1, 0, torch.arange(2, 6), g, (4, 1), antithetic=False)
    assert torch.equal(t2, t[2:6])
