"""Time grids of the few-step samplers: the respaced chain, the log-SNR grid, the clean end."""

import math

import numpy as np
import pytest
import torch

from meddiff.diffusion.grid import kept_timesteps, time_grid
from meddiff.diffusion.schedule import DiscreteSchedule, linear_betas

T = 200
B0, B1 = 1e-4 * 2000 / T, 0.02 * 2000 / T  # the paper's betas scaled to a 200-step chain (as tests/samplers)
SCHED = DiscreteSchedule(linear_betas(T, B0, B1))
NP_AB = np.cumprod(1 - np.linspace(B0, B1, T))


@pytest.mark.parametrize("steps", [1, 2, 7, 50, T])
def test_uniform_grid_is_the_respaced_chain(steps):
    assert torch.equal(kept_timesteps(SCHED, steps, "uniform"), SCHED.respaced(steps)[0])


def test_logsnr_grid_takes_the_nearest_timestep_to_evenly_spaced_half_log_snr():
    lam = 0.5 * np.log(NP_AB / (1 - NP_AB))  # decreasing in k
    for steps in (2, 5, 12):
        k = kept_timesteps(SCHED, steps, "logsnr").numpy()
        targets = np.linspace(lam[-1], lam[0], steps)
        want = np.unique([np.argmin(np.abs(lam - t)) for t in targets])
        np.testing.assert_array_equal(k, want)
        assert len(k) == steps and k[0] == 0 and k[-1] == T - 1
    # compared with the uniform grid, the log-SNR grid is finer at both ends of the chain
    ls, un = kept_timesteps(SCHED, 12, "logsnr").tolist(), kept_timesteps(SCHED, 12).tolist()
    assert ls[1] < un[1] / 2 and ls[-1] - ls[-2] < un[-1] - un[-2]
    fine = kept_timesteps(SCHED, T, "logsnr")  # the discrete grid is coarse in lambda near k = 0: merged
    assert len(fine) < T and torch.all(fine[1:] > fine[:-1])
    assert torch.equal(kept_timesteps(SCHED, 1, "logsnr"), torch.tensor([T - 1]))


def test_time_grid_runs_noisy_to_clean_and_ends_at_the_clean_point():
    g = time_grid(SCHED, 6, "uniform")
    assert len(g) == 6 and g.k.tolist() == sorted(g.k.tolist(), reverse=True) and int(g.k[-1]) == 0
    assert g.alpha.dtype == torch.float64 and g.alpha.shape == (7,)
    torch.testing.assert_close(g.alpha**2 + g.sigma**2, torch.ones(7, dtype=torch.float64))
    torch.testing.assert_close(g.lam[:-1], 0.5 * SCHED.log_snr[g.k])
    assert (g.alpha[-1].item(), g.sigma[-1].item(), g.lam[-1].item()) == (1.0, 0.0, math.inf)
    assert torch.all(g.lam[1:] > g.lam[:-1])
    assert len(time_grid(SCHED, None)) == T
    with pytest.raises(ValueError, match=r"steps must be in 1\.\.200, got 0"):
        time_grid(SCHED, 0)
