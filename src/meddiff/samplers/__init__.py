"""Samplers: free functions over a denoiser sharing one signature,

    sample_X(denoiser, cond, times=None, *, steps=None, <sampler options>, generators, clip=True, callback=None) -> x0

over any `meddiff.diffusion.denoiser.Denoiser` and a time grid `times` (meddiff.diffusion.grid;
None: the denoiser's own grid of `steps` points), returning image-space samples [B, 1, *spatial]
in [-1, 1]; one torch.Generator per image (noise.py).
ancestral (Ho et al. 2020), ddim (Song et al. 2021), dpm_solver_pp (Lu et al. 2022).
"""

from .ancestral import sample_ancestral
from .ddim import sample_ddim
from .dpm_solver import sample_dpm_solver_pp
from .noise import generators_for, randn_per_image

__all__ = ["generators_for", "randn_per_image", "sample_ancestral", "sample_ddim", "sample_dpm_solver_pp"]
