"""Moved: training checkpoint folders and model-file reading live in `meddiff.checkpointing`; the DDPM
loader `load_model` in `meddiff.diffusion.checkpoint`. These names stay importable from here for
code written against the old place."""

from ..checkpointing import (BASELINE_FORMAT, CONFIG_FILE, FORMAT, FORMATS, LATEST, MODEL_FILE, STATE_FILE, STATE_JSON,
                             VDM_FORMAT, TrainState, check_format, checkpoint_name, export_model, init_weights,
                             latest_checkpoint, list_checkpoints, load_train_state, model_metadata, prune, read_config,
                             resolve_model_file, save_checkpoint)

__all__ = ["BASELINE_FORMAT", "CONFIG_FILE", "FORMAT", "FORMATS", "LATEST", "MODEL_FILE", "STATE_FILE", "STATE_JSON",
           "VDM_FORMAT", "TrainState", "check_format", "checkpoint_name", "export_model", "init_weights",
           "latest_checkpoint", "list_checkpoints", "load_train_state", "model_metadata", "prune", "read_config",
           "resolve_model_file", "save_checkpoint"]
