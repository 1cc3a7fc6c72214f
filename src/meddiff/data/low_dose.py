"""Low-dose radiograph noise: Poisson quantum noise plus Gaussian electronic noise.

The physics of a film taken at a fraction d of the full dose, in the form used to simulate low-dose
acquisitions from full-dose ones (Zeng et al., "A simple low-dose x-ray CT simulation from high-dose
scan", IEEE TNS 2015, eq. 1-4; the same detector model for projection radiography):

    p      = p_max * (x0 + 1) / 2                 line integral of attenuation; a displayed film is
                                                  bright where it attenuates (MONOCHROME2), so x0 = 1
                                                  is the most attenuating pixel (transmission e^-p_max)
    N      ~ Poisson(d * N0 * exp(-p)) + N(0, sigma_e^2)     detected quanta + electronic noise   (eq. 1)
    p_hat  = -log(max(N, 1) / (d * N0))           the log transform a detector applies              (eq. 3)
    y      = clamp(2 * p_hat / p_max - 1, -1, 1)  back to image units

N0 is the full-dose count per pixel of an unattenuated ray, sigma_e the electronic noise in
counts. To first order (delta method) the noise of p_hat at transmission t = exp(-p) is

    Var[p_hat] ~ 1 / (d N0 t) + sigma_e^2 / (d N0 t)^2                                       (eq. 4)

so the noise grows where the film is bright (little transmitted signal) and as the dose falls:
unlike the additive Gaussian of Med-cDiff's denoising task, it depends on the signal.
All levels are per image: d is drawn log-uniformly in `dose`, so each octave of dose is as likely.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

Tensor = torch.Tensor


@dataclass(frozen=True)
class LowDose:
    """Parameters of the detector model above (all in counts or attenuation units)."""

    dose: tuple[float, float] = (0.05, 0.5)  # fraction of the full dose, drawn log-uniformly per image
    photons: float = 2.0e4  # N0: counts per pixel of an unattenuated ray at full dose
    electronic_std: float = 10.0  # sigma_e: electronic noise, counts
    p_max: float = 4.0  # line integral at x0 = +1 (transmission e^-4 = 1.8%)

    def __post_init__(self) -> None:
        lo, hi = self.dose
        if not (0.0 < lo <= hi <= 1.0):
            raise ValueError(f"task.dose_fraction: expected 0 < low <= high <= 1, got {self.dose}")
        if self.photons <= 0 or self.electronic_std < 0 or self.p_max <= 0:
            raise ValueError(f"low-dose model: photons > 0, electronic_std >= 0, p_max > 0 expected, got {self}")

    def draw_dose(self, batch: int, u: Tensor) -> Tensor:
        """Per-image dose fractions [B] from uniform draws u [B]: log-uniform in `dose`."""
        lo, hi = (math.log(v) for v in self.dose)
        return torch.exp(lo + (hi - lo) * u[:batch])

    def variance(self, x0: Tensor, d: float) -> Tensor:
        """Eq. 4 in image units: the first-order variance of y at a clean value x0 and dose d."""
        t = torch.exp(-self.p_max * (x0 + 1) / 2)
        n = d * self.photons * t
        var_p = 1.0 / n + self.electronic_std**2 / n**2
        return var_p * (2.0 / self.p_max) ** 2


def low_dose(x0: Tensor, d: Tensor, model: LowDose, generator: torch.Generator | None = None) -> Tensor:
    """y of eq. 1-3 for x0 [B, 1, H, W] in [-1, 1] at dose fractions d [B]; randomness from generator."""
    device = generator.device if generator is not None else x0.device
    x = x0.to(device, torch.float64)
    expected = d.to(device, torch.float64).view(-1, 1, 1, 1) * model.photons * torch.exp(-model.p_max * (x + 1) / 2)
    counts = torch.poisson(expected, generator=generator)
    counts = counts + model.electronic_std * torch.randn(x.shape, generator=generator, device=device, dtype=torch.float64)
    p_hat = -torch.log(counts.clamp_min(1.0) / (d.to(device, torch.float64).view(-1, 1, 1, 1) * model.photons))
    y = 2.0 * p_hat / model.p_max - 1.0
    return y.clamp(-1.0, 1.0).to(x0.device, x0.dtype)
