"""Building a VDM from meddiff's config, and its data: the glue between meddiff.config and meddiff.vdm.

- `build_vdm(cfg, data_shape, cond_channels)`: the VDMModel the ``vdm`` section describes
  (gamma, ScoreNet or meddiff's U-Net from the ``model`` section, level or ResNet
  encoder/decoder, class embedding), see the design note in meddiff.vdm.
- `latent_shape`: the shape of f = encoder(x) per example (the diffused variable).
- `NoCondition`: the degradation of unconditional / class-conditional generation (the
  dataset's cond is the image itself and is never shown to the model; cond_channels 0).
- `slice_labels` / `class_names` / `label_indices`: class labels of the slices of a prepared
  folder, from the manifest (see `slice_labels`), as indices into a sorted list of names.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import ClassVar, Mapping, Sequence

import torch
from torch import Tensor

from ..config import Config
from ..errors import ConfigError, InputError
from ..io.suffixes import strip_image_suffix
from ..nn.unet import build_unet
from .networks import LevelDecoder, LevelEncoder, ResNetDecoder, ResNetEncoder, ScoreNet, UNetScore, VDMModel
from .schedule import build_gamma



def latent_shape(cfg: Config, data_shape: Sequence[int]) -> tuple[int, ...]:
    """Shape of f = encoder(x) per example: the data shape (levels encoder) or (z_dim,) (ResNet encoder)."""
    return (cfg.vdm.z_dim,) if cfg.vdm.encoder == "resnet" else tuple(int(s) for s in data_shape)


def build_vdm(cfg: Config, data_shape: Sequence[int], cond_channels: int = 0) -> VDMModel:
    """The VDMModel of cfg.vdm for data [C, H, W] = data_shape (ScoreNet and ResNet encoders are
    dense, so fixed to that shape; the U-Net is convolutional). cond_channels: condition planes of
    an image-conditional U-Net score network (0 otherwise)."""
    v = cfg.vdm
    data_shape = tuple(int(s) for s in data_shape)
    if v.image_condition and cond_channels < 1:
        raise ConfigError("vdm.image_condition is true but the task gives no condition planes")
    class_dim = v.embedding_dim if v.n_classes > 0 else 0
    gamma = build_gamma(v.gamma, v.gamma_min, v.gamma_max, v.gamma_features)
    lat = latent_shape(cfg, data_shape)
    if v.score == "scorenet":
        score = ScoreNet(math.prod(lat), v.embedding_dim, v.n_layers, cond_dim=class_dim,
                         gamma_min=v.gamma_min, gamma_max=v.gamma_max)
    else:
        if v.encoder == "resnet":
            raise ConfigError("vdm.score unet diffuses images: it needs vdm.encoder levels, not resnet")
        in_ch = data_shape[0] + (cond_channels if v.image_condition else 0)
        score = UNetScore(build_unet(cfg.model, in_ch, data_shape[0], cond_dim=class_dim), v.gamma_min, v.gamma_max)
    if v.encoder == "resnet":
        enc = ResNetEncoder(data_shape, v.z_dim, v.encoder_hidden, v.encoder_layers, v.vocab_size, class_dim)
        dec = ResNetDecoder(data_shape, v.z_dim, v.encoder_hidden, v.encoder_layers, v.vocab_size, class_dim)
    else:
        enc, dec = LevelEncoder(v.vocab_size), LevelDecoder(v.vocab_size)
    return VDMModel(gamma, score, enc, dec, n_classes=v.n_classes, class_dim=class_dim)


class NoCondition:
    """Degradation contract (meddiff.data.degrade) for generation: no condition planes.

    Returns (x0, ones) so PairDataset's items keep their shape; model_condition gives an empty
    [B, 0, H, W] tensor."""

    cond_channels: ClassVar[int] = 0

    def __call__(self, x0: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        return x0, torch.ones_like(x0)

    def model_condition(self, cond: Tensor, mask: Tensor) -> Tensor:
        return cond[:, :0]


def _file_label(source: str) -> str:
    """The label of label_from "file": the file name without its image suffix."""
    return strip_image_suffix(Path(source).name)


def _column_values(rows: Sequence[Mapping[str, str]], column: str, labels_csv: str, where: Path) -> list[str]:
    """Column `column` for each manifest row: from the manifest itself, or joined from labels_csv
    by case_id (preferred) or patient_id."""
    if not labels_csv:
        if rows and column not in rows[0]:
            raise InputError(f"vdm.label_from column:{column}: {where / 'manifest.csv'} has no column {column!r} "
                             f"(columns: {sorted(rows[0])}); add it there or give vdm.labels_csv")
        return [r[column] for r in rows]
    path = Path(labels_csv)
    if not path.is_file():
        raise InputError(f"vdm.labels_csv {path} does not exist")
    with open(path, newline="") as f:
        table = list(csv.DictReader(f))
    header = set(table[0]) if table else set()
    key = "case_id" if "case_id" in header else "patient_id" if "patient_id" in header else None
    if key is None or column not in header:
        raise InputError(f"vdm.labels_csv {path}: expected columns {column!r} and case_id or patient_id, got {sorted(header)}")
    lookup = {r[key]: r[column] for r in table}
    missing = sorted({r[key] for r in rows} - set(lookup))
    if missing:
        raise InputError(f"vdm.labels_csv {path}: no {column!r} for {key} {missing[:5]}" + (" ..." if len(missing) > 5 else ""))
    return [lookup[r[key]] for r in rows]


def slice_labels(rows: Sequence[Mapping[str, str]], label_from: str, labels_csv: str = "",
                 where: Path = Path(".")) -> list[str]:
    """The class label (a string) of each manifest row.

    label_from: "folder" = the first folder of the row's source path (relative to the folder
    `meddiff prepare` read; prepare with --patient-from file when the class folders hold the
    patients' files); "file" = the source file name without its format suffix (e.g. the shipped
    brain stacks axial / coronal / sagittal); "column:NAME" = column NAME of manifest.csv or of
    labels_csv (joined by case_id or patient_id).
    """
    if label_from == "folder":
        out = []
        for r in rows:
            parts = Path(r["source"]).parts
            if len(parts) < 2:
                raise InputError(f"vdm.label_from folder: slice {r['case_id']} comes from {r['source']!r}, which is not "
                                 "inside a folder of the prepared input (expected INPUT/<class>/...)")
            out.append(parts[0])
        return out
    if label_from == "file":
        return [_file_label(r["source"]) for r in rows]
    if label_from.startswith("column:"):
        values = _column_values(rows, label_from[len("column:"):], labels_csv, where)
        empty = [r["case_id"] for r, v in zip(rows, values) if not str(v).strip()]
        if empty:
            raise InputError(f"vdm.label_from {label_from}: empty label for {empty[:5]}")
        return [str(v).strip() for v in values]
    raise InputError(f"vdm.label_from {label_from!r}: expected folder, file or column:NAME")


def class_names(labels: Sequence[str], n_classes: int) -> list[str]:
    """Sorted distinct labels; their count must be the configured n_classes."""
    names = sorted(set(labels))
    if len(names) != n_classes:
        raise ConfigError(f"vdm.n_classes is {n_classes} but the labels have {len(names)} distinct values {names[:10]}")
    return names


def label_indices(labels: Sequence[str], names: Sequence[str]) -> list[int]:
    """Index of each label in `names` (InputError naming labels the model does not know)."""
    pos = {n: i for i, n in enumerate(names)}
    unknown = sorted(set(labels) - set(pos))
    if unknown:
        raise InputError(f"class label(s) {unknown[:5]} are not among the model's classes {list(names)}")
    return [pos[x] for x in labels]


def case_labels(prepared, splits: Sequence[str], label_from: str, labels_csv: str = "") -> dict[str, str]:
    """case_id -> label string for every slice of the given splits of a Prepared folder."""
    out: dict[str, str] = {}
    for s in splits:
        rows = prepared.rows[s]
        for r, lab in zip(rows, slice_labels(rows, label_from, labels_csv, prepared.root)):
            out[r["case_id"]] = lab
    return out
