"""Training: the loop (`train`), EMA, stateless data order, atomic safetensors checkpoints
(`load_model` / `export_model` for sampling), CSV logs and the loss plot, torchrun DDP."""

from .checkpoint import export_model, latest_checkpoint, load_model, save_checkpoint
from .loop import TrainResult, train

__all__ = ["TrainResult", "export_model", "latest_checkpoint", "load_model", "save_checkpoint", "train"]
