"""The pseudonym rule: what of an input's patient data may reach an output byte or name (issue 28 P4, P5).

Without ``--keep-patient-tags``:

- a patient identifier (a DICOM PatientID, a patient folder's name) is written as its pseudonym,
  ``MD`` + 10 hex digits of HMAC-SHA256(key, identifier) (:func:`pseudonym`);
- a path written into an output (a provenance ``source``, an output file's folder) is relative to
  ``--input`` with every *folder* name replaced by its pseudonym (clinic exports and PACS name
  folders after patients: ``Doe_Jane_123/``); file names (``IM_0001.dcm``, ``scan.nii.gz``) are kept
  (:func:`public_relpath`);
- the command line recorded as provenance names no path: every argument that names an existing
  file or folder becomes ``<path>`` (:func:`public_command`).

The key is deliberately *stable*, not a per-run salt: a resumed run, and degrade -> sample ->
evaluate, must give a patient the same pseudonym to pair its files. It is ``$MEDDIFF_PSEUDONYM_KEY``
when set, else the key file ``~/.config/meddiff/pseudonym-key`` (random, created once, mode 0600).
Whoever holds the key can test a guessed identifier against a pseudonym; without it nothing links
a pseudonym back to the patient. A pseudonym is its own pseudonym, so a chain of verbs does not
pseudonymise twice.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import shlex
from pathlib import Path
from typing import Iterable

_PSEUDONYM = re.compile(r"MD[0-9A-F]{10}")
KEY_ENV = "MEDDIFF_PSEUDONYM_KEY"
_KEY: bytes | None = None


def key_file() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "meddiff" / "pseudonym-key"


def key() -> bytes:
    """The pseudonym key: $MEDDIFF_PSEUDONYM_KEY, else the key file (created once, 0600, atomically)."""
    global _KEY
    env = os.environ.get(KEY_ENV)
    if env:
        return env.encode("utf-8")
    if _KEY is None:
        path = key_file()
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
            try:
                os.link(tmp, path)  # never replaces a key another process wrote meanwhile
            except FileExistsError:
                pass
            finally:
                tmp.unlink(missing_ok=True)
        _KEY = path.read_bytes().strip()
    return _KEY


def is_pseudonym(identifier: str) -> bool:
    return bool(_PSEUDONYM.fullmatch(identifier))


def pseudonym(identifier: str) -> str:
    """``MD`` + 10 upper-case hex digits of HMAC-SHA256(key, identifier); a pseudonym maps to itself."""
    identifier = str(identifier)
    if is_pseudonym(identifier):
        return identifier
    return "MD" + hmac.new(key(), identifier.encode("utf-8"), hashlib.sha256).hexdigest()[:10].upper()


def public_relpath(path: str | os.PathLike, root: str | os.PathLike | None, *, is_dir: bool | None = None) -> Path:
    """`path` relative to `root` (``--input``) with every folder name pseudonymised and the file name kept.

    A folder item (a DICOM series folder) is pseudonymised itself; `path` equal to `root`, or outside
    it, keeps only its last part (pseudonymised if it is a folder)."""
    path = Path(path)
    folder = path.is_dir() if is_dir is None else is_dir
    parts: tuple[str, ...] = (path.name,)
    if root is not None:
        root = Path(root)
        if root in path.parents:
            parts = path.relative_to(root).parts
    *dirs, last = parts
    return Path(*(pseudonym(d) for d in dirs), pseudonym(last) if folder else last)


def public_key(key: str, is_dir: bool = False) -> str:
    """A '/'-separated pairing key (a path relative to an input folder, without suffix) as outputs show it:
    every folder part pseudonymised, the file name kept (a folder item, a DICOM series, pseudonymised too)."""
    *dirs, last = key.split("/")
    return "/".join([*(pseudonym(d) for d in dirs), pseudonym(last) if is_dir else last])


def public_command(argv: Iterable[str]) -> str:
    """The command line with every argument that names an existing file or folder (``-i DIR``,
    ``NAME=DIR``, ``--x=FILE``) written ``<path>``."""
    out = []
    for arg in argv:
        arg = str(arg)
        head, sep, tail = arg.rpartition("=")
        if sep and tail and _exists(tail) and not _exists(arg):
            out.append(f"{head}=<path>")
        elif out and _exists(arg):  # the program's own name stays
            out.append("<path>")
        else:
            out.append(arg)
    return shlex.join(out)


def _exists(text: str) -> bool:
    try:
        return bool(text) and not text.startswith("-") and ("/" in text or os.path.lexists(text)) and os.path.lexists(text)
    except (OSError, ValueError):
        return False
