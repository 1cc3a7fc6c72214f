"""The old import path of meddiff.checkpointing.named (named models: shipped and local cards, resolve_checkpoint,
locate) and of the deprecated meddiff.diffusion.checkpoint.load_pretrained.

Kept one release because docs/cli.md, docs/api.md and docs/python_api.md named it; import from
meddiff.checkpointing.named (and meddiff.diffusion.checkpoint for load_pretrained).
"""

from .checkpointing.named import (MODEL_FILE, MODELS_ENV, REGISTRY, SHIPPED_DIR, ModelCard, card_from_metadata,
                                  default_sampler, local_models, locate, model_config, model_roots, models_table,
                                  resolve_checkpoint, shipped_models)
from .diffusion.checkpoint import load_pretrained

__all__ = ["MODEL_FILE", "MODELS_ENV", "REGISTRY", "SHIPPED_DIR", "ModelCard", "card_from_metadata", "default_sampler",
           "load_pretrained", "local_models", "locate", "model_config", "model_roots", "models_table", "resolve_checkpoint",
           "shipped_models"]
