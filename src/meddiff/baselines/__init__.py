"""Non-learned and learned baselines evaluated on the same data and with the same metrics as meddiff.

- :mod:`meddiff.baselines.interpolation`: bicubic / bilinear / nearest upsampling of a low-resolution image.
- :mod:`meddiff.baselines.classical`: median filter and non-local means (denoising), biharmonic
  inpainting (scikit-image; the ``baselines`` extra). ``meddiff sample --method NAME`` runs them.
- learned baselines (the :class:`~meddiff.baselines.base.Baseline` contract), trained by
  ``meddiff train`` with ``objective: baseline`` and sampled by ``meddiff sample --checkpoint``:
  :mod:`~meddiff.baselines.pix2pix` (pix2pixGAN), :mod:`~meddiff.baselines.srgan` (SRGAN),
  ``upgan`` (UP-GAN) and ``hpunet`` (HPUNet); :func:`build_baseline` imports them by name.
"""

from .interpolation import METHODS, interpolate_baseline
from .registry import BASELINES, build_baseline, load_baseline

__all__ = ["BASELINES", "METHODS", "build_baseline", "interpolate_baseline", "load_baseline"]
