"""A MONAI bundle folder around a meddiff DDPM checkpoint, checked by MONAI's own tools
(`python -m monai.bundle verify_metadata / verify_net_in_out / ckpt_export / run`):

    BUNDLE/configs/metadata.json         versions, task, network_data_format (input `image`, output
                                         `pred`), the model card; "schema" names the local schema file
    BUNDLE/configs/metadata_schema.json  a JSON schema of the MONAI Bundle specification's mandatory
                                         keys and tensor specifiers (written by meddiff, no download)
    BUNDLE/configs/inference.json        `network_def` (BundleUNet, built from the config alone),
                                         `network` (with models/model.pt), and `run`: restore a folder of
                                         images with the checkpoint's sampler (meddiff sample)
    BUNDLE/models/model.pt               state dict of `network_def` (what ckpt_export reads)
    BUNDLE/models/model.safetensors      the meddiff checkpoint itself (config, card, sampler defaults)
    BUNDLE/models/denoiser.ts            meddiff's TorchScript net(x, k) (meddiff.export), checked
    BUNDLE/docs/README.md, LICENSE, docs/license.txt   the card, commands to run, the licence text

All paths inside are relative to the bundle folder (MONAI's `bundle_root`, default "." = the
working directory, as in MONAI's model zoo). Written into a temporary folder, renamed into place.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .. import __version__
from ..nn.unet import UNet
from .network import TOLERANCE, ExportResult, export_denoiser, read_contract
from ..checkpointing import resolve_model_file
from ..checkpointing.named import card_from_metadata, resolve_checkpoint, shipped_models
from ..cli import main
from ..diffusion.checkpoint import load_model
from ..io.outdir import check_output_dir, mark

SCHEMA_FILE = "metadata_schema.json"


class BundleUNet(UNet):
    """meddiff's U-Net with MONAI's calling convention ``net(image, timesteps=None)``.

    image: [B, 1 + C_cond, H, W] = cat(x_t, condition planes), [-1, 1]; timesteps: int64 [B] indices
    0..num_timesteps-1, None = num_timesteps - 1, the noisiest step (where the one-call
    posterior-mean restorer evaluates the network, meddiff.samplers.posterior_mean). Same
    parameters (state-dict keys) as UNet."""

    def __init__(self, *, num_timesteps: int, **unet_kwargs):
        super().__init__(**unet_kwargs)
        self.num_timesteps = int(num_timesteps)

    def forward(self, image: Tensor, timesteps: Tensor | None = None) -> Tensor:
        if timesteps is None:
            timesteps = torch.full((image.shape[0],), self.num_timesteps - 1, dtype=torch.long, device=image.device)
        return super().forward(image, timesteps)


def load_state(net: torch.nn.Module, path: str | Path) -> torch.nn.Module:
    """`net` with the state dict at `path` (models/model.pt) loaded strictly; eval mode."""
    net.load_state_dict(torch.load(str(path), map_location="cpu", weights_only=True))
    return net.eval()


def restore_folder(checkpoint: str | Path, input_dir: str | Path, output_dir: str | Path, *, sampler: str, steps: int,
                   seed: int = 0, samples: int = 1, device: str = "auto", overwrite: bool = False) -> int:
    """Restore every image of `input_dir` into `output_dir` as `meddiff sample` does (same reading,
    normalisation, domain check, writers and provenance); RuntimeError if it fails."""
    argv = ["sample", "--checkpoint", str(checkpoint), "--input", str(input_dir), "-o", str(output_dir),
            "--sampler", str(sampler), "--steps", str(steps), "--seed", str(seed), "--samples", str(samples),
            "--device", str(device), "--no-progress"] + (["--overwrite"] if overwrite else [])
    code = main(argv)
    if code:
        raise RuntimeError(f"meddiff {' '.join(argv)} failed (exit status {code}); see the messages above")
    return code


def _card(checkpoint) -> object:
    file = resolve_model_file(resolve_checkpoint(checkpoint))
    for card in shipped_models():
        if card.path == file:
            return card
    return card_from_metadata(file.stem, file, "local")


def _versions() -> dict:
    try:
        import monai

        monai_version = monai.__version__
    except ImportError:  # the bundle needs MONAI only where it is deployed
        monai_version = "1.3.0"
    return {"monai_version": monai_version, "pytorch_version": torch.__version__.split("+")[0],
            "numpy_version": np.__version__, "required_packages_version": {"meddiff": __version__}}


def bundle_metadata(info: dict, card) -> dict:
    """configs/metadata.json from the export's contract and the model card."""
    n_in, m = info["in_channels"], info["size_multiple"]
    d = info["config"]["diffusion"]
    cond = {"sr": "the low-resolution image, interpolated to the output size", "denoise": "the noisy image",
            "inpaint": "the image with holes set to 0, then the hole mask"}.get(info["task"], "condition")
    channels = {"0": "x_t, the diffused variable" + (" (residual x0 - condition)" if d["residual"] else "")}
    channels.update({str(i): cond if n_in == 2 else f"condition plane {i}" for i in range(1, n_in)})
    task = card.task or info["task"]
    return {
        "schema": SCHEMA_FILE, "version": "0.1.0", "changelog": {"0.1.0": f"exported by meddiff {__version__}"},
        **_versions(), "name": card.name, "task": task,
        "description": f"Denoiser network of a conditional DDPM (meddiff) for {task}; configs/inference.json restores a "
                       "folder of images with the checkpoint's stored sampler",
        "authors": "meddiff", "copyright": card.licence or "see LICENSE",
        "data_source": card.training_data or "not recorded", "data_type": card.modality or "not recorded",
        "intended_use": "research; synthetic outputs, not for diagnosis",
        "network_data_format": {
            "inputs": {
                "image": {"type": "image", "format": "magnitude", "modality": card.modality or "n/a",
                          "num_channels": n_in, "spatial_shape": [f"{m}*n", f"{m}*n"], "dtype": "float32",
                          "value_range": [-1, 1], "is_patch_data": False, "channel_def": channels},
                "timesteps": {"type": "tuples", "format": "timestep index", "modality": "n/a", "num_channels": 1,
                              "spatial_shape": [1], "dtype": "int64", "value_range": [0, d["timesteps"] - 1],
                              "is_patch_data": False,
                              "channel_def": {"0": f"optional second argument; default {d['timesteps'] - 1}"}}},
            "outputs": {
                "pred": {"type": "image", "format": d["prediction"], "modality": card.modality or "n/a", "num_channels": 1,
                         "spatial_shape": [f"{m}*n", f"{m}*n"], "dtype": "float32", "value_range": [],
                         "is_patch_data": False, "channel_def": {"0": info["output"]}}}},
        "meddiff": {k: v for k, v in info.items() if k != "config"},
        "model_card": card.to_json() | {"path": Path(card.path).name},
    }


def metadata_schema() -> dict:
    """A JSON schema (draft-07) of configs/metadata.json: the mandatory keys of the MONAI Bundle
    specification (docs.monai.io, "MONAI Bundle Specification") and, for every input and output, the
    mandatory keys of a tensor format specifier."""
    tensor = {"type": "object",
              "required": ["type", "format", "num_channels", "spatial_shape", "dtype", "value_range", "is_patch_data",
                           "channel_def"],
              "properties": {"type": {"type": "string"}, "format": {"type": "string"}, "modality": {"type": "string"},
                             "num_channels": {"type": "integer", "minimum": 1},
                             "spatial_shape": {"type": "array", "items": {"type": ["integer", "string"]}},
                             "dtype": {"type": "string"}, "value_range": {"type": "array", "items": {"type": "number"}},
                             "is_patch_data": {"type": "boolean"}, "channel_def": {"type": "object"}}}
    tensors = {"type": "object", "minProperties": 1, "additionalProperties": tensor}
    text = {"type": "string", "minLength": 1}
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "metadata.json of a MONAI bundle (the specification's mandatory keys; written by meddiff)",
        "type": "object",
        # the specification's optional_packages_version is required_packages_version since MONAI 1.2 (which renames it)
        "required": ["version", "monai_version", "pytorch_version", "numpy_version", "required_packages_version", "task",
                     "description", "authors", "copyright", "network_data_format"],
        "properties": {
            "version": text, "monai_version": text, "pytorch_version": text, "numpy_version": text,
            "optional_packages_version": {"type": "object"}, "required_packages_version": {"type": "object"},
            "changelog": {"type": "object"}, "task": text, "description": text, "authors": text, "copyright": text,
            "network_data_format": {"type": "object", "required": ["inputs", "outputs"],
                                    "properties": {"inputs": tensors, "outputs": tensors}}},
    }


def inference_config(cfg, info: dict) -> dict:
    """configs/inference.json for monai.bundle.ConfigParser / `python -m monai.bundle run`."""
    m, s = cfg.model, cfg.sampler
    # the bundle imports meddiff.export_bundle, the old path of this module kept for the bundles written so far
    return {
        "imports": ["$import torch", "$from meddiff import export_bundle"],
        "bundle_root": ".",
        "device": "auto",
        "network_def": {"_target_": "meddiff.export_bundle.BundleUNet", "num_timesteps": cfg.diffusion.timesteps,
                        "in_channels": info["in_channels"], "out_channels": info["out_channels"],
                        "channels": list(m.channels), "num_res_blocks": m.num_res_blocks,
                        "attention_levels": list(m.attention_levels), "norm_groups": m.norm_groups,
                        "num_heads": m.num_heads, "spatial_dims": m.spatial_dims},
        "network": "$export_bundle.load_state(@network_def, @bundle_root + '/models/model.pt')",
        "checkpoint": "$@bundle_root + '/models/model.safetensors'",
        "input_dir": "$@bundle_root + '/inputs'",
        "output_dir": "$@bundle_root + '/eval'",
        "sampler": s.name, "steps": s.steps, "seed": s.seed, "samples": 1, "overwrite": False,
        "run": "$export_bundle.restore_folder(@checkpoint, @input_dir, @output_dir, sampler=@sampler, "
               "steps=@steps, seed=@seed, samples=@samples, device=@device, overwrite=@overwrite)",
    }


def licence_text(card) -> str:
    """The model's licence as its card states it, with the full notice text where the card refers to
    the MNI/McGill notice (quoted in src/meddiff/checkpoints/README.md, section "Licence")."""
    text = (card.licence or "No licence recorded for this model.").strip()
    text = text.replace("(see src/meddiff/checkpoints/README.md)", "(below)")
    if "MNI/McGill" not in text:
        return text + "\n"
    readme = (Path(__file__).parents[1] / "checkpoints" / "README.md").read_text()
    section = readme.split("## Licence", 1)[1].split("\n#", 1)[0]  # up to the next heading
    notice = " ".join(ln[1:].strip() for ln in section.splitlines() if ln.startswith(">"))
    if "Louis Collins" not in notice:
        raise RuntimeError("the MNI/McGill notice was not found in meddiff/checkpoints/README.md, section 'Licence'")
    return (f"{text}\n\nThe weights are derived from the MNI ICBM152 2009a template; the MNI/McGill notice applies "
            f"and must be kept with copies:\n\n{notice}\n")


def _readme(card, info: dict) -> str:
    rel = card.lines()
    rel[0] = f"{card.name} ({card.origin}): models/model.safetensors"
    rel = [ln for ln in rel if not ln.startswith("  documented in:")]
    s = info["config"]["sampler"]
    return "\n".join([
        f"# {card.name}: meddiff denoiser network (MONAI bundle)", "", "Synthetic outputs, not for diagnosis.", "",
        "```", *rel, "```", "",
        "Network (`network_def` in configs/inference.json, weights models/model.pt): `net(image, timesteps=None)`, "
        f"image [B, {info['in_channels']}, H, W] = cat(x_t, condition planes) in [-1, 1], H, W multiples of "
        f"{info['size_multiple']}; timesteps int64 [B] (default the noisiest step); output: {info['output']}.", "",
        "From this folder (MONAI 1.3+ and meddiff installed; nothing is downloaded):", "", "```bash",
        "python -m monai.bundle verify_metadata --meta_file configs/metadata.json --filepath configs/metadata_schema.json",
        "python -m monai.bundle verify_net_in_out network_def --meta_file configs/metadata.json "
        "--config_file configs/inference.json",
        f"python -m monai.bundle ckpt_export network_def --filepath models/model.ts --meta_file configs/metadata.json "
        f"--config_file configs/inference.json --use_trace True --input_shape \"[1, {info['in_channels']}, 64, 64]\"",
        "python -m monai.bundle run --config_file configs/inference.json --meta_file configs/metadata.json "
        "--input_dir inputs --output_dir eval",
        "```", "",
        f"`run` restores every image in `input_dir` (DICOM, NIfTI, PNG, NPY) with the checkpoint's sampler "
        f"({s['name']}, {s['steps']} step(s); override `--sampler`, `--steps`, `--seed`) exactly as "
        "`meddiff sample --checkpoint models/model.safetensors` does. `ckpt_export` traces the network with one "
        "input, so its models/model.ts is the call at the noisiest step (the posterior-mean restorer's one call); "
        "for every timestep use models/denoiser.ts (meddiff's export, net(x, k)):", "",
        "```python", "from meddiff.export import exported_denoiser", "from meddiff.samplers.run import restore",
        "cfg, denoiser = exported_denoiser('models/denoiser.ts')",
        "x = restore(denoiser, cond, sampler=cfg.sampler.name, steps=cfg.sampler.steps)  # cond [N, C, H, W] in [-1, 1]",
        "```", "", "Licence: see LICENSE.", ""])


def export_monai_bundle(checkpoint, dest: str | Path, *, overwrite: bool = False) -> ExportResult:
    """Write the bundle folder `dest` (module docstring); returns the TorchScript export's check."""
    dest = Path(dest)
    check_output_dir(dest, [], overwrite=overwrite, verb="export")
    card = _card(checkpoint)
    file = resolve_model_file(resolve_checkpoint(checkpoint))
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        res = export_denoiser(file, tmp / "models" / "denoiser.ts", "torchscript")
        info = read_contract(tmp / "models" / "denoiser.ts")
        cfg, net, _ = load_model(file)
        shutil.copyfile(file, tmp / "models" / "model.safetensors")
        torch.save({k: v.detach().cpu().float().contiguous() for k, v in net.state_dict().items()}, tmp / "models" / "model.pt")
        (tmp / "configs").mkdir()
        (tmp / "configs" / "metadata.json").write_text(json.dumps(bundle_metadata(info, card), indent=1) + "\n")
        (tmp / "configs" / SCHEMA_FILE).write_text(json.dumps(metadata_schema(), indent=1) + "\n")
        (tmp / "configs" / "inference.json").write_text(json.dumps(inference_config(cfg, info), indent=1) + "\n")
        (tmp / "docs").mkdir()
        (tmp / "docs" / "README.md").write_text(_readme(card, info))
        licence = licence_text(card)
        (tmp / "LICENSE").write_text(licence)
        (tmp / "docs" / "license.txt").write_text(licence)
        mark(tmp, "export", format="monai-bundle", tolerance=TOLERANCE)
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(dest, "monai-bundle", res.max_abs_diff, res.check_shape)
