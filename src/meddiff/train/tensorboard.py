"""Sample grids for TensorBoard (train.tensorboard): at each checkpoint, the EMA model restores the
first few validation images with the config's sampler; one image per item, [condition | sample | truth]."""

from __future__ import annotations

import torch
from torch import Tensor

GRID_ITEMS = 4  # validation items shown


def sample_grid(cfg, deg, denoiser, val_set, device) -> Tensor:
    """[N, 1, H, 3W] in [0, 1]: condition, sample and truth side by side for the first GRID_ITEMS
    validation items (seeded by train.seed; no global RNG is touched, so training is unchanged)."""
    from ..data.order import VAL, SeededItems, collate, mix_seed
    from ..samplers.run import restore, sampler_options

    n = min(GRID_ITEMS, len(val_set))
    items = SeededItems(val_set, mix_seed(cfg.train.seed, VAL))
    b = collate([items[(i, i)] for i in range(n)])
    cond = deg.model_condition(b.cond, b.mask)
    s = cfg.sampler
    opts = sampler_options(s.name, cfg.diffusion.variance, s.eta, s.grid)
    with torch.no_grad():
        x = restore(denoiser, cond, sampler=s.name, steps=s.steps, samples=1, seed=cfg.train.seed,
                    batch_size=n, device=device, progress=False, **opts)[0]
    grid = torch.cat([b.cond[:, :1].cpu(), x, b.x0.cpu()], dim=-1)
    return ((grid + 1) / 2).clamp(0, 1)


def log_sample_grid(writer, run, val_set, step: int) -> None:
    """Add the grid of :func:`sample_grid` to `writer` as images ``val/samples`` at `step`, for
    objectives that sample (an `ema_denoiser` and a degradation `deg`: the DDPM; not a distilled
    student, whose validation pairs carry their starting noise: `sample_grid = False`)."""
    obj = run.objective
    if not obj.sample_grid:  # an optional hook of the Objective (meddiff.objectives.protocol.OptionalHooks)
        return
    grid = sample_grid(run.cfg, obj.deg, obj.ema_denoiser(run.ema), val_set, run.env.device)
    writer.add_images("val/samples (condition | sample | truth)", grid, step, dataformats="NCHW")
    writer.flush()
