"""VDM checkpoints: meddiff's checkpoint folders (meddiff.checkpointing) with format "meddiff-vdm-v1".

model.safetensors holds the EMA weights of the whole VDMModel (gamma's parameters or fixed
buffers, score network, encoder/decoder, class embedding) and, besides the config, the
metadata keys

    vdm_vocab_size    levels of the discretised data ("256")
    vdm_data_shape    data shape per example, e.g. "1x32x32" (ScoreNet and ResNet encoders are dense)
    vdm_classes       JSON list of class names (index = label); "[]" when unconditional
    vdm_cond_channels condition planes of an image-conditional U-Net ("0" otherwise)

The DDPM loader (diffusion.checkpoint.load_model) refuses these files and `load_vdm` refuses DDPM
files, each naming what the file is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from ..config import Config
from ..errors import CheckpointError
from ..checkpointing import VDM, frozen, load_weights, read_model_file
from .build import build_vdm
from .networks import VDMModel


def vdm_metadata(cfg: Config, data_shape: Sequence[int], class_names: Sequence[str], cond_channels: int) -> dict[str, str]:
    """The VDM keys of model.safetensors' metadata (see the module docstring)."""
    return {
        "vdm_vocab_size": str(cfg.vdm.vocab_size),
        "vdm_data_shape": "x".join(str(int(s)) for s in data_shape),
        "vdm_classes": json.dumps(list(class_names)),
        "vdm_cond_channels": str(int(cond_channels)),
    }


@dataclass(frozen=True)
class LoadedVDM:
    cfg: Config
    model: VDMModel  # EMA weights, eval mode, no gradients
    data_shape: tuple[int, ...]
    class_names: tuple[str, ...]
    cond_channels: int
    step: int
    file: Path

    @property
    def timesteps(self) -> int:
        """T of the discrete grid an image-conditional VDM restores on (vdm.timesteps; 1000 for a continuous-time model)."""
        return self.cfg.vdm.timesteps or 1000

    def restore_defaults(self):
        """The sampler defaults of restoring with this VDM (meddiff.samplers.registry): the ancestral chain with
        the posterior variance over min(vdm.sample_steps, T) steps of its grid of T times, eta 0, fp32."""
        from ..samplers.registry import SamplingDefaults

        return SamplingDefaults("ancestral", min(self.cfg.vdm.sample_steps, self.timesteps), 0.0, "auto", "fp32",
                                "beta_tilde", self.timesteps, "the VDM's grid, vdm.timesteps or 1000")

    def denoiser(self):
        """The score network and gamma under the Denoiser contract on the grid of `timesteps` times
        (sampling.VDMDenoiser.from_gamma)."""
        from .sampling import VDMDenoiser

        score = self.model.score
        multiple = getattr(getattr(score, "unet", score), "size_multiple", 1)
        return VDMDenoiser.from_gamma(score, self.model.gamma, self.timesteps, size_multiple=multiple)


def load_vdm(path: str | Path, device: str | torch.device = "cpu") -> LoadedVDM:
    """The EMA VDMModel of a checkpoint (model file, checkpoint folder, run folder or `latest` file)."""
    mf = read_model_file(path, VDM.name)
    file, tensors, meta, cfg = mf.file, mf.tensors, mf.meta, mf.cfg
    try:
        shape = tuple(int(s) for s in meta["vdm_data_shape"].split("x"))
        names = tuple(str(n) for n in json.loads(meta["vdm_classes"]))
        cond_channels = int(meta["vdm_cond_channels"])
        step = int(meta.get("step", "0"))
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{file}: VDM metadata is missing or malformed ({e})") from None
    if len(names) != cfg.vdm.n_classes:
        raise CheckpointError(f"{file}: {len(names)} class names stored but vdm.n_classes is {cfg.vdm.n_classes}")
    model = build_vdm(cfg, shape, cond_channels)
    tensors = {k: v.float() if v.dtype == torch.float16 else v for k, v in tensors.items()}  # half exports
    load_weights(model, tensors, file)
    model = frozen(model, device)
    return LoadedVDM(cfg, model, shape, names, cond_channels, step, file)
