"""A MONAI bundle folder around a TorchScript export (meddiff.export), for teams that deploy with MONAI:

    BUNDLE/configs/metadata.json    versions, task, network_data_format (inputs/outputs), the model card
    BUNDLE/configs/inference.json   `network` (the TorchScript net) and `denoiser` (meddiff's wrapper) for
                                    monai.bundle.ConfigParser; sampling stays meddiff's (meddiff.samplers)
    BUNDLE/models/model.ts          the TorchScript network, checked against PyTorch
    BUNDLE/docs/README.md           the model card and how to run it
    BUNDLE/LICENSE                  the model's licence as its card states it

Layout and metadata keys follow the MONAI Bundle specification; written into a temporary folder
and renamed into place.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .export import TOLERANCE, ExportResult, export_denoiser, read_contract


def _card(checkpoint) -> object:
    from .models import card_from_metadata, resolve_checkpoint, shipped_models
    from .checkpointing import resolve_model_file

    file = resolve_model_file(resolve_checkpoint(checkpoint))
    for card in shipped_models():
        if card.path == file:
            return card
    return card_from_metadata(file.stem, file, "local")


def bundle_metadata(info: dict, card) -> dict:
    """configs/metadata.json from the export's contract and the model card."""
    try:
        import monai

        monai_version = monai.__version__
    except ImportError:  # the bundle needs MONAI only where it is deployed
        monai_version = "1.3.0"
    n_in = info["in_channels"]
    cond = {"sr": "the low-resolution image, interpolated to the output size", "denoise": "the noisy image",
            "inpaint": "the image with holes set to 0, then the hole mask"}.get(info["task"], "condition")
    return {
        "version": "0.1.0", "changelog": {"0.1.0": f"exported by meddiff {__version__}"},
        "monai_version": monai_version, "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__, "required_packages_version": {"meddiff": __version__},
        "name": card.name, "task": card.task or info["task"],
        "description": f"Denoiser network of a conditional DDPM (meddiff) for {card.task or info['task']}; "
                       "sampling with meddiff.samplers through meddiff.export.exported_denoiser",
        "authors": "meddiff", "copyright": card.licence or "see LICENSE",
        "data_source": card.training_data or "not recorded", "data_type": card.modality or "not recorded",
        "intended_use": "research; synthetic outputs, not for diagnosis",
        "network_data_format": {
            "inputs": {
                "x": {"type": "image", "format": "magnitude", "modality": card.modality or "unknown",
                      "num_channels": n_in, "spatial_shape": [f"{info['size_multiple']}*n", f"{info['size_multiple']}*n"],
                      "dtype": "float32", "value_range": [-1, 1], "is_patch_data": False,
                      "channel_def": {"0": "x_t, the diffused variable", "1+": cond}},
                "k": {"type": "tuple", "format": "timestep index", "num_channels": 1, "spatial_shape": [1],
                      "dtype": "int64", "value_range": [0, info["config"]["diffusion"]["timesteps"] - 1],
                      "is_patch_data": False, "channel_def": {"0": "timestep"}}},
            "outputs": {
                "pred": {"type": "image", "format": info["config"]["diffusion"]["prediction"], "num_channels": 1,
                         "spatial_shape": ["H", "W"], "dtype": "float32", "value_range": [],
                         "is_patch_data": False, "channel_def": {"0": info["output"]}}}},
        "meddiff": {k: v for k, v in info.items() if k != "config"},
        "model_card": card.to_json() | {"path": Path(card.path).name},
    }


INFERENCE = {
    "imports": ["$import torch", "$from meddiff.export import exported_denoiser"],
    "bundle_root": ".",
    "model_path": "$@bundle_root + '/models/model.ts'",
    "network_def": "$torch.jit.load(@model_path, map_location='cpu')",
    "network": "$@network_def.eval()",
    "denoiser": "$exported_denoiser(@model_path)[1]",
}


def _readme(card, info: dict) -> str:
    lines = [f"# {card.name}: meddiff denoiser network (MONAI bundle)", "", "Synthetic outputs, not for diagnosis.", "",
             "```", *card.lines(), "```", "",
             "Network contract (`models/model.ts`): " + "; ".join(f"{k}: {v}" for k, v in info["inputs"].items())
             + f"; output: {info['output']}; H, W multiples of {info['size_multiple']}.", "",
             "Sample with meddiff's samplers:", "", "```python",
             "from meddiff.export import exported_denoiser", "from meddiff.inference import restore",
             "cfg, denoiser = exported_denoiser('models/model.ts')",
             "x = restore(denoiser, cond, sampler=cfg.sampler.name, steps=cfg.sampler.steps)  # cond [N, C, H, W] in [-1, 1]",
             "```", ""]
    return "\n".join(lines)


def export_monai_bundle(checkpoint, dest: str | Path, *, overwrite: bool = False) -> ExportResult:
    """Write the bundle folder `dest` (module docstring); returns the TorchScript export's check."""
    from .io.outdir import check_output_dir, mark

    dest = Path(dest)
    check_output_dir(dest, [], overwrite=overwrite, verb="export")
    card = _card(checkpoint)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        res = export_denoiser(checkpoint, tmp / "models" / "model.ts", "torchscript")
        info = read_contract(tmp / "models" / "model.ts")
        (tmp / "configs").mkdir()
        (tmp / "configs" / "metadata.json").write_text(json.dumps(bundle_metadata(info, card), indent=1) + "\n")
        (tmp / "configs" / "inference.json").write_text(json.dumps(INFERENCE, indent=1) + "\n")
        (tmp / "docs").mkdir()
        (tmp / "docs" / "README.md").write_text(_readme(card, info))
        (tmp / "LICENSE").write_text((card.licence or "No licence recorded for this model.") + "\n")
        mark(tmp, "export", format="monai-bundle", tolerance=TOLERANCE)
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(dest, "monai-bundle", res.max_abs_diff, res.check_shape)
