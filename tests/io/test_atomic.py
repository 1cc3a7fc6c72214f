"""Atomic writes: the final file has the usual permissions (0666 & ~umask) and no temporary is left,
whatever the writer did to the temporary file (safetensors replaces it with a 0600 file)."""

import os
import stat

import pytest
import torch
from safetensors.torch import save_file

from meddiff.io.atomic import atomic_path, atomic_write_text


def usual_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@pytest.mark.parametrize("writer", ["text", "safetensors"])
def test_atomic_files_get_the_usual_permissions(tmp_path, writer):
    path = tmp_path / ("a.txt" if writer == "text" else "a.safetensors")
    if writer == "text":
        atomic_write_text(path, "hello")
    else:
        with atomic_path(path) as tmp:
            save_file({"w": torch.zeros(3)}, str(tmp))
    assert stat.S_IMODE(path.stat().st_mode) == usual_mode()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    path = tmp_path / "a.txt"
    atomic_write_text(path, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
