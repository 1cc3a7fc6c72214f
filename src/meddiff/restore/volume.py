"""How the slices of one volume meet a network: 2D / 2.5D slice by slice, a 3D network on the whole
stack, and thick-slice (through-plane) models.

The restore pipeline (restore.files) hands every restorer the condition planes of one volume as
slices along --axis, ``[N, C, H, W]``; a Layout turns them into the network's images and back:

- 2D in-plane: the N slices as they are (2.5D: each slice with its K neighbours, context_planes);
- 3D (model.spatial_dims 3): one volume ``[1, C, N, H, W]`` (meddiff.samplers.run.restore samples it
  whole, or in overlapping 3D windows blended inside every step, meddiff.samplers.tiling);
- 2D thick-slice (task.sr_axis through, model.spatial_dims 2): the reformats that contain the slice
  axis, ``[W, C, N, H]``, whose rows run along it (the model was trained on such planes,
  data.volume_dataset.ThickSliceSR).

Results come back as ``[S, N, 1, H, W]``. Data consistency (``--consistency project``) is built
on the same layout: in-plane SR projects each slice onto its low-resolution measurement, thick-slice
SR projects along the slice axis onto the measured thick slices (samplers.consistency.thick_project).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from ..samplers.consistency import Measurement, measurement_for


@dataclass(frozen=True)
class Layout:
    """spatial_dims: the network's (2 or 3); context: 2.5D neighbours K; thick: the thick-slice factor (0: in-plane)."""

    spatial_dims: int = 2
    context: int = 0
    thick: int = 0

    @property
    def slicewise(self) -> bool:
        return self.spatial_dims == 2 and not self.thick

    def to_net(self, planes: Tensor) -> Tensor:
        """Condition planes [N, C, H, W] of one volume -> the network's condition images."""
        if self.spatial_dims == 3:
            return planes.movedim(0, 1)[None]
        if self.thick:
            return planes.permute(3, 1, 0, 2)
        if self.context:
            from ..data.volume_dataset import context_planes

            return context_planes(planes, self.context)
        return planes

    def from_net(self, out: Tensor) -> Tensor:
        """The network's results [S, B, 1, *spatial] -> [S, N, 1, H, W]."""
        if self.spatial_dims == 3:
            return out[:, 0].movedim(2, 1)
        if self.thick:
            return out.permute(0, 3, 2, 4, 1)
        return out

    def measurement(self, kind: str, mode: str, planes: Tensor, lowres: Tensor | None, *, factor: float | None,
                    resample: int = 1) -> Measurement | None:
        """The consistency measurement in the network's layout (None for mode "none").

        planes [N, C, H, W]: the condition slices; lowres: the measured slices ([n, 1, h, w]: in-plane
        low-resolution slices, or the n thick slices), None to measure the condition itself."""
        if self.thick:
            if mode == "none":
                return None
            from ..data.thick import thick_slices

            y = thick_slices(planes[:, :1], self.thick, 0) if lowres is None else lowres
            size = tuple(self.to_net(planes).shape[2:])
            return Measurement(kind, mode, lowres=self.to_net(y), size=size, thick=self.thick, axis=0)
        measured = measurement_for(kind, mode, planes, factor=factor, lowres=lowres, resample=resample)
        if measured is None or self.spatial_dims == 2 or measured.lowres is None:
            return measured
        return replace(measured, lowres=self.to_net(measured.lowres), size=tuple(self.to_net(planes).shape[2:]))


def layout_of(cfg) -> Layout:
    """The Layout of a checkpoint's config."""
    thick = int(cfg.task.sr_factor) if cfg.task.kind == "sr" and cfg.task.sr_axis == "through" else 0
    return Layout(cfg.model.spatial_dims, cfg.task.context_slices, thick)


def noise_for(layout: Layout, noise: str) -> str:
    """A 3D network samples the volume as one image: its noise is the volume's whatever --noise says."""
    return "independent" if layout.spatial_dims == 3 else noise


__all__ = ["Layout", "layout_of", "noise_for"]
