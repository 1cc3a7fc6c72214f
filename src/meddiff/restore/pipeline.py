"""A model ready to restore, in the manner of diffusers' pipelines: one object from a name or a path,
whose `restore` does what `meddiff sample` does, with the checkpoint's stored sampler settings.

    import meddiff
    pipe = meddiff.load_pretrained("sr_x4_general")            # a shipped name, a model file, a run folder
    hr = pipe.restore(lowres)                                  # a 2D/3D array -> the restored array
    written = pipe.restore("scan.nii.gz", output="out")        # files / folders -> files, as `meddiff sample`
    draws = pipe.restore(lowres, sampler="dpm_solver_pp", steps=10, samples=4)   # any `meddiff sample` setting

Arrays are read as `meddiff sample` reads an .npy file (through its reader: one image [H, W] or a volume
[Z, Y, X] sliced along `axis`; unit spacing); the result is what it would write: the restored array in the input's units
(float32), or with samples > 1 a dict of "mean", "std", "sample<k>" (and "uncertainty" for a calibrated
model). Files and folders are restored into `output` exactly as `meddiff sample --output` writes them.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..checkpointing import DDPM, VDM, ModelSource
from .files import Request, Written
from ..checkpointing.named import locate, model_config
from ..data.degrade import build_degradation
from ..data.slices import from_slices
from ..diffusion.checkpoint import load_model
from ..errors import InputError
from ..samplers.progress import Progress
from ..vdm.checkpoint import load_vdm
from .files import Run, products_of, read_item, restore_volume
from .restorers import located, restore, restorer_for, validate_request

#: the Request fields a caller may set (the rest describe the run: input, output, checkpoint, method, argv)
SETTINGS = tuple(f.name for f in dataclasses.fields(Request) if f.name not in ("input", "output", "checkpoint", "method", "argv"))


class Pipeline:
    """A located checkpoint (checkpointing.ModelSource) and the device it restores on; `restore` applies the
    checkpoint's stored sampler defaults unless overridden (samplers.registry.resolve), as `meddiff sample`."""

    def __init__(self, source: ModelSource, device: Any = "cpu", **defaults: Any):
        unknown = sorted(set(defaults) - set(SETTINGS))
        if unknown:
            raise TypeError(f"unknown settings {unknown}; expected some of {list(SETTINGS)}")
        self.source, self.device, self.defaults = source, device, {"progress": False, **defaults}

    def __repr__(self) -> str:
        return f"Pipeline({self.source.path}, format {self.source.format}, device {self.device})"

    @property
    def cfg(self):
        """The config stored in the checkpoint (meddiff.config.Config)."""
        return model_config(self.source)

    @property
    def denoiser(self):
        """The checkpoint's Denoiser (DDPM or image-conditional VDM) for meddiff.samplers, on `device`."""
        if self.source.format == VDM.name:
            return load_vdm(self.source, device=self.device).denoiser()

        return load_model(self.source, device=self.device)[2]

    def request(self, output: str | os.PathLike, input: str | os.PathLike | None = None, **overrides: Any) -> Request:
        """The restore.Request of this checkpoint with the pipeline's and the call's settings."""
        settings = {**self.defaults, **overrides}
        unknown = sorted(set(settings) - set(SETTINGS))
        if unknown:
            raise TypeError(f"unknown settings {unknown}; expected some of {list(SETTINGS)}")
        return Request(output=Path(output), input=None if input is None else Path(input), checkpoint=self.source, **settings)

    def restore(self, images_or_files: Any, *, output: str | os.PathLike | None = None, **overrides: Any):
        """Restore arrays (one, or a list) -> arrays (module docstring), or a file / folder (a str or Path,
        with `output`) -> the files written (restore.files.Written), with the settings of `meddiff sample`
        (sampler, steps, samples, seed, sr_factor, axis, mask, ...) as keyword arguments."""
        if isinstance(images_or_files, (str, os.PathLike)):
            if output is None:
                raise TypeError("restoring files needs output=FOLDER (where `meddiff sample --output` would write)")
            return restore(self.request(output, images_or_files, **overrides), self.device)
        if output is not None:
            raise TypeError("output= is for files; arrays are returned")
        many = isinstance(images_or_files, (list, tuple))
        arrays = list(images_or_files) if many else [images_or_files]
        results = restore_arrays(self.request("unused", None, **overrides), arrays, self.device)
        return results if many else results[0]


def restore_arrays(args: Request, arrays: list, device: Any = "cpu") -> list:
    """Each array through the restore pipeline of `meddiff sample` (restore.files.restore_volume), read as
    an .npy input; returns per array the restored volume (float32), or a dict of the products (samples > 1)."""
    validate_request(dataclasses.replace(args, input=Path("arrays")))
    args = located(args)
    restorer = restorer_for(args, device)
    run = Run(args, restorer.task, build_degradation(restorer.task), restorer.restore_slices, restorer.describe, {},
              Progress(args.progress, files=len(arrays)), domain_check=restorer.domain_check)
    out = []
    with tempfile.TemporaryDirectory(prefix="meddiff-arrays-") as tmp:
        for i, a in enumerate(arrays):
            a = np.asarray(a.detach().cpu() if hasattr(a, "detach") else a)
            if a.ndim not in (2, 3):
                raise InputError(f"array {i}: shape {a.shape}; expected an image [H, W] or a volume [Z, Y, X]")
            path = Path(tmp) / f"array{i}.npy"
            np.save(path, a)  # read back by the reader of `meddiff sample`: the same Volume as its .npy input
            vol, item = read_item(path, args.allow_rgb)
            restored, norm, _, _ = restore_volume(run, vol, item)
            products = {tag: from_slices(t[:, 0].numpy(), vol.ndim, args.axis).astype(np.float32)
                        for tag, t in products_of(run, norm, restored).items()}
            out.append(products["restored"] if args.samples == 1 else products)
    run.bar.close()
    return out


def load_pretrained(name_or_path: str | os.PathLike, *, device: Any = "cpu", **defaults: Any) -> Pipeline:
    """The Pipeline of a shipped model's name (`meddiff models`), a model file, a checkpoint or a run folder
    (a DDPM, distilled student, image-conditional VDM or learned baseline); `defaults`: settings every
    restore of this pipeline uses (e.g. samples=4, progress=True), each call may override them."""
    source = locate(name_or_path)
    if source.format is None:
        load_model(source)  # says what is wrong with the file
    return Pipeline(source, device, **defaults)


__all__ = ["Pipeline", "SETTINGS", "load_pretrained", "restore_arrays"]
