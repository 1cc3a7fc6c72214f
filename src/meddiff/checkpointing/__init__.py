"""meddiff's checkpoints, one public module for every model family.

    formats.py   the format registry (DDPM, VDM, baseline), reading a model file (`read_model_file`,
                 `format_of`), the stored config, loading weights into a module
    folders.py   training checkpoint folders: atomic save, `latest`, pruning, exact resume
                 (`load_train_state`), fine-tuning init (`init_weights`), `export_model`
    named.py     named models: the shipped ones (checkpoints/models.yaml) and local ones with their model
                 cards, `resolve_checkpoint` (a name or path -> a path), `locate` (-> a ModelSource)

The loaders that build a model live with their family and read through `read_model_file`:
`meddiff.diffusion.checkpoint.load_model` (DDPM), `meddiff.vdm.checkpoint.load_vdm`,
`meddiff.baselines.registry.load_baseline`. (The shipped weights are in the data folder
meddiff/checkpoints/, hence this package's name.)
"""

from .folders import (STATE_FILE, STATE_JSON, TrainState, checkpoint_name, export_model, init_weights, list_checkpoints,
                      load_train_state, model_metadata, prune, save_checkpoint)
from .formats import (BASELINE, BASELINE_FORMAT, CONFIG_FILE, DDPM, FORMAT, FORMATS, LATEST, MODEL_FILE, REGISTRY, VDM,
                      VDM_FORMAT, Format, ModelFile, ModelSource, check_format, config_from_yaml, format_for, format_of, frozen,
                      latest_checkpoint, load_weights, locate_model, read_config, read_model_file, read_safetensors,
                      resolve_model_file, update_metadata)

__all__ = [
    "STATE_FILE", "STATE_JSON", "TrainState", "checkpoint_name", "export_model", "init_weights", "list_checkpoints",
    "load_train_state", "model_metadata", "prune", "save_checkpoint",
    "BASELINE", "BASELINE_FORMAT", "CONFIG_FILE", "DDPM", "FORMAT", "FORMATS", "LATEST", "MODEL_FILE", "REGISTRY", "VDM",
    "VDM_FORMAT", "Format", "ModelFile", "ModelSource", "check_format", "config_from_yaml", "format_for", "format_of", "frozen",
    "latest_checkpoint", "load_weights", "locate_model", "read_config", "read_model_file", "read_safetensors", "resolve_model_file",
    "update_metadata",
]
