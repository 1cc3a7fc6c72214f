"""Atomic file writes: write to a temporary file in the same folder, fsync, then rename.

A reader never sees a half-written file, and if writing fails (full disk, interruption) the
previous file at that path is left intact and the temporary file is removed.

Temporary names carry their owner: ``.NAME.m<pid>@<host>.XXXXXXXX.tmp[.suffix]``. A process
killed with SIGKILL cannot remove its temporary file or folder; the next write of the same NAME
(:func:`atomic_dir`), and the output-folder checks of meddiff.io.outdir, remove the ones whose
owner is a process of this machine that no longer runs (:func:`stale`). A live owner's, or
another machine's, are never touched.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import tempfile
from pathlib import Path
from typing import Callable, Iterator


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"


def owner_tag() -> str:
    """``m<pid>@<host>``: which process writes a temporary file (see :func:`stale`)."""
    return f"m{os.getpid()}@{_host()}"


_OWNER = re.compile(r"\.(m\d+@[A-Za-z0-9-]+)\.")


def on_this_machine(tag: str) -> bool:
    return tag.partition("@")[2] == _host()


def owner_running(tag: str) -> bool:
    """True if `tag` (``m<pid>@<host>``, :func:`owner_tag`) names a process that may still run: one of this
    machine that runs (another user's counts), or any process of another machine (which cannot be asked)."""
    pid, _, host = tag[1:].partition("@")
    if host != _host():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True


def owner_of(path: str | Path) -> str | None:
    """The owner tag in a temporary name of this module, None for a name without one."""
    m = _OWNER.search(Path(path).name)
    return None if m is None else m.group(1)


def stale(path: str | Path) -> bool | None:
    """For a temporary name of this module: True if its owner was a process of this machine that no longer
    runs (a killed write: safe to delete), False if the owner may run, None for a name without an owner tag
    (older meddiff, or not a temporary name)."""
    owner = owner_of(path)
    return None if owner is None else not owner_running(owner)


def remove_stale(folder: str | Path, prefix: str = ".", recursive: bool = False) -> list[Path]:
    """Delete the temporary files/folders of killed meddiff writes (:func:`stale`) in `folder` whose names
    start with `prefix` (all of them in the tree below with `recursive`); returns what was removed."""
    import shutil

    folder, gone = Path(folder), []
    if not folder.is_dir():
        return gone
    for p in list(folder.iterdir()):
        if p.name.startswith(prefix) and p.name.startswith(".") and ".tmp" in p.name and stale(p):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
            gone.append(p)
        elif recursive and p.is_dir() and not p.is_symlink():
            gone += remove_stale(p, prefix, recursive=True)
    return gone


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it onto `path`, else delete it.

    The temporary name keeps the final suffix (e.g. ``.nii.gz``) so writers that choose a
    format from the file name still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ".tmp"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{owner_tag()}.", suffix=".tmp" + suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    mode = 0o666 & ~umask  # mkstemp makes 0600; give the usual permissions of a new file
    os.chmod(tmp, mode)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # again: some writers (safetensors) replace the file and make it 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_with(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp_path)` and move the result onto `path` atomically."""
    with atomic_path(path) as tmp:
        write(tmp)


@contextlib.contextmanager
def atomic_dir(path: str | Path, *, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success rename it onto `path`, else delete it.

    Used for multi-file outputs (a DICOM series, PNG slices): readers see either no folder or
    the complete one. If `path` exists: with ``replace=False`` FileExistsError is raised before
    anything is written; with ``replace=True`` the old folder is moved aside, the new one renamed
    into place, then the old one deleted.
    """
    import shutil
    import uuid

    path = Path(path)
    if path.exists() and not replace:
        raise FileExistsError(f"{path} already exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path.parent, prefix=f".{path.name}.")  # what a killed write of this folder left (never a live one's)
    if path.exists():  # a replace killed after the new folder landed leaves the old one moved aside
        for old in path.parent.glob(f".{path.name}.old-*"):
            shutil.rmtree(old, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{owner_tag()}.", suffix=".tmp", dir=path.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; give the usual folder permissions
    try:
        yield tmp
        for f in tmp.iterdir():
            if f.is_file():
                with open(f, "rb+") as fh:
                    os.fsync(fh.fileno())
        if path.exists():
            old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_writable_dir(path: str | Path, what: str = "output folder") -> None:
    """Raise InputError unless `path` is, or can be made, a folder this process can write in.

    Run before long work so a read-only or non-folder output path fails at once. Leaves nothing
    behind: it only creates (and removes) a temporary folder inside the nearest existing ancestor.
    """
    from meddiff.errors import InputError  # noqa: PLC0415

    path = Path(path)
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        where = f"{path}: {probe} is a file" if probe != path else f"{path}: is a file"
        raise InputError(f"{where}; expected the {what} to be a folder (or a new path whose parents are folders)")
    try:
        tmp = tempfile.mkdtemp(prefix=".meddiff-write-check.", dir=probe)
        os.rmdir(tmp)
    except OSError as e:
        raise InputError(f"{path}: cannot write the {what} under {probe} ({e.strerror or e}); expected a writable location") from None
