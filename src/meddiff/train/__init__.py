"""Training: the loop (`train`), EMA, stateless data order, CSV logs and the loss plot, torchrun DDP.
Checkpoint folders are written by `meddiff.checkpointing`."""

from ..checkpointing import export_model, latest_checkpoint, save_checkpoint
from .loop import TrainResult, train

__all__ = ["TrainResult", "export_model", "latest_checkpoint", "save_checkpoint", "train"]
