"""Provenance of written outputs: what made them, recorded beside every output as JSON.

A provenance mapping holds whatever the caller knows (``checkpoint_sha256``, ``sampler``,
``steps``, ``seed``, ``precision``, ...); :func:`complete` adds the meddiff version, the command
line of this process and the time, so every output records at least those. The sidecar of an
output ``dir/name.ext`` (or a series folder ``dir/name``) is ``dir/name.json``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import shlex
import sys
from pathlib import Path
from typing import Any, Mapping

from meddiff.io import phi
from meddiff.io.atomic import atomic_write_text

_IMAGE_SUFFIXES = (".nii.gz", ".nii", ".dcm", ".png", ".tif", ".tiff", ".npy", ".npz")


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (e.g. the checkpoint an output was made with)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def complete(provenance: Mapping[str, Any] | None, *, keep_paths: bool = False) -> dict[str, Any]:
    """The caller's provenance plus meddiff_version, command (this process's argv; without its paths
    unless `keep_paths`, meddiff.io.phi) and created (UTC)."""
    from meddiff import __version__  # noqa: PLC0415

    command = shlex.join(sys.argv) if keep_paths else phi.public_command(sys.argv)
    base = {"meddiff_version": str(__version__), "command": command,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    return {**base, **dict(provenance or {})}


def sidecar_path(output: Path) -> Path:
    """``dir/name.nii.gz`` -> ``dir/name.json``; a folder ``dir/name`` -> ``dir/name.json``."""
    name = output.name
    for suffix in _IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return output.with_name(name[: -len(suffix)] + ".json")
    return output.with_name(name + ".json")


def write_sidecar(output: Path, record: Mapping[str, Any]) -> Path:
    """Write `record` as indented JSON next to `output` (atomically); returns the sidecar path."""
    path = sidecar_path(output)
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    return path
