"""Loadable downstream models: a tissue segmenter and a slice classifier, shipped as safetensors.

File layout (safetensors, float16 weights; metadata strings):

    format        "meddiff-seg-v1" (Segmenter) or "meddiff-cls-v1" (Classifier)
    class_names   JSON list of the class names, index = label
    channels      JSON list of the network widths (nets.SegUNet / nets.SliceClassifier)
    input         how images must be prepared (text)
    recipe        JSON: data, held-out split, augmentation, optimiser, steps, seed, measured scores

Both models take ``[B, 1, H, W]`` float images in [-1, 1], prepared like `meddiff prepare`
(one min/max window per volume, padded to square with -1, 128 x 128); they run in float32
on the CPU in eval mode without gradients.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from ..errors import InputError
from .nets import SegUNet, SliceClassifier

CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"
SEG_FORMAT = "meddiff-seg-v1"
CLS_FORMAT = "meddiff-cls-v1"
SEG_FILE = CHECKPOINTS / "seg_mni152_tissue.safetensors"
CLS_FILE = CHECKPOINTS / "cls_orientation.safetensors"
INPUT_NOTE = ("[B, 1, H, W] float in [-1, 1]: one min/max window per volume to [-1, 1], slices padded to square "
              "with -1 and resized to 128 x 128 (as `meddiff prepare`); upright (superior/anterior at the top row)")


def _check_input(x: Tensor, multiple: int, who: str) -> Tensor:
    x = torch.as_tensor(x)
    if x.ndim != 4 or x.shape[1] != 1:
        raise InputError(f"{who}: expected images [B, 1, H, W], got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise InputError(f"{who}: expected float images in [-1, 1], got dtype {x.dtype}")
    if x.shape[-2] % multiple or x.shape[-1] % multiple:
        raise InputError(f"{who}: image size {tuple(x.shape[-2:])} is not a multiple of {multiple}")
    return x.float()


def read_checkpoint(path: str | Path, expected_format: str) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(tensors, parsed metadata) of a downstream safetensors file; InputError naming the file otherwise."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file; expected a {expected_format} safetensors file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable safetensors file ({e}); expected a {expected_format} file") from None
    fmt = meta.get("format")
    if fmt != expected_format:
        raise InputError(f"{path}: format {fmt!r}; expected {expected_format!r}")
    try:
        parsed = {"class_names": tuple(json.loads(meta["class_names"])), "channels": tuple(json.loads(meta["channels"])),
                  "recipe": json.loads(meta.get("recipe", "{}"))}
    except (KeyError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: metadata lacks or garbles {e}; expected JSON class_names and channels") from None
    return tensors, parsed


def write_checkpoint(path: str | Path, net: torch.nn.Module, fmt: str, class_names: tuple[str, ...],
                     recipe: Mapping[str, Any], input_note: str = INPUT_NOTE) -> Path:
    """Save ``net``'s weights as float16 safetensors with the metadata of the module docstring
    (``input_note``: how images must be prepared; default the MR slices' note)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in net.state_dict().items()}
    meta = {"format": fmt, "class_names": json.dumps(list(class_names)), "channels": json.dumps(list(net.channels)),
            "input": input_note, "recipe": json.dumps(dict(recipe), sort_keys=True)}
    save_file(tensors, str(path), metadata=meta)
    return path


def _build(net: torch.nn.Module, tensors: dict[str, Tensor], path: Path) -> torch.nn.Module:
    try:
        net.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)
    except RuntimeError as e:
        raise InputError(f"{path}: weights do not fit the network its metadata describes ({str(e).splitlines()[0]})") from None
    return net.eval()


class _Downstream:
    """What the segmenter and the classifier share: a network in eval mode, its class names, the
    training recipe and the file it came from; ``load(path)`` reads a file of the subclass's FORMAT
    (None = the shipped DEFAULT_FILE)."""

    DEFAULT_FILE: Path
    FORMAT: str
    NET: type

    def __init__(self, net: nn.Module, class_names: tuple[str, ...], recipe: Mapping[str, Any] | None = None,
                 path: Path | None = None):
        self.net = net.eval()
        self.class_names = tuple(class_names)
        self.n_classes = len(self.class_names)
        self.recipe = dict(recipe or {})
        self.path = path

    @classmethod
    def load(cls, path: str | Path | None = None):
        path = Path(path) if path is not None else cls.DEFAULT_FILE
        tensors, meta = read_checkpoint(path, cls.FORMAT)
        net = cls.NET(len(meta["class_names"]), meta["channels"])
        return cls(_build(net, tensors, path), meta["class_names"], meta["recipe"], path)  # type: ignore[arg-type]


class Segmenter(_Downstream):
    """Brain tissue segmenter: ``seg(x)`` with x ``[B, 1, H, W]`` in [-1, 1] -> LongTensor ``[B, H, W]``.

    Shipped model: labels 0 = other/background, 1 = grey matter, 2 = white matter, trained on
    MNI152 2009a slices against argmax(1 - gm - wm, gm, wm) of the template's probability maps.
    H and W must be multiples of 8.
    """

    DEFAULT_FILE, FORMAT, NET = SEG_FILE, SEG_FORMAT, SegUNet

    @torch.no_grad()
    def logits(self, x: Tensor) -> Tensor:
        """Class logits ``[B, K, H, W]`` (float32)."""
        return self.net(_check_input(x, self.net.size_multiple, "Segmenter"))

    def __call__(self, x: Tensor) -> Tensor:
        return self.logits(x).argmax(1)


class Classifier(_Downstream):
    """Slice classifier: ``clf(x)`` with x ``[B, 1, H, W]`` in [-1, 1] -> logits ``[B, K]`` (float32).

    Shipped model: slice orientation, classes ("axial", "coronal", "sagittal").
    """

    DEFAULT_FILE, FORMAT, NET = CLS_FILE, CLS_FORMAT, SliceClassifier

    @torch.no_grad()
    def __call__(self, x: Tensor) -> Tensor:
        return self.net(_check_input(x, 1, "Classifier"))

    def predict(self, x: Tensor) -> Tensor:
        """Class indices ``[B]`` (LongTensor)."""
        return self(x).argmax(1)
