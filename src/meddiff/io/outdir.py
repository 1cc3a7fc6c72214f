"""Output folders meddiff may write into, and the only ones it may ever replace.

Rule (every verb that writes a folder: prepare, sample, train, evaluate, demo, study create):

- An output folder that equals an input, or contains one, is refused, with or without
  ``--overwrite``: replacing it would delete the input.
- A missing or empty folder is used.
- A non-empty folder is refused unless ``--overwrite`` is given, and ``--overwrite`` only
  replaces a folder that meddiff itself wrote: one holding the marker file ``MARKER``
  (written into every output folder by :func:`mark`). A user's folder is never replaced.

Paths are compared after resolving symbolic links, so ``d/.`` or a link to ``d`` is ``d``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterable

from ..errors import InputError
from .atomic import atomic_write_text, check_writable_dir

MARKER = ".meddiff-output.json"


def _is_within(child: Path, parent: Path) -> bool:
    """True if `child` is `parent` or lies inside it (both resolved)."""
    return child == parent or parent in child.parents


def written_by_meddiff(folder: str | Path) -> bool:
    """True if `folder` holds meddiff's marker file."""
    return (Path(folder) / MARKER).is_file()


def check_not_input(output: str | Path, inputs: Iterable[str | Path | None] = (), *, inside_input_ok: bool = True) -> Path:
    """Refuse (InputError) an output that is a file, equals an input or contains one (see check_output_dir)."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise InputError(f"output {output} is a file; expected a folder (or a path that does not exist yet)")
    out = output.resolve()
    for inp in inputs:
        if inp is None:
            continue
        src = Path(inp).resolve()
        if _is_within(src, out):
            what = "is" if src == out else "contains"
            raise InputError(f"output folder {output} {what} the input {inp}; choose an output folder outside the inputs "
                             "(meddiff never writes over or deletes its inputs)")
        if not inside_input_ok and src.is_dir() and _is_within(out, src):
            raise InputError(f"output folder {output} lies inside the input folder {inp}, which is searched for images: "
                             "choose an output folder outside it")
    check_writable_dir(output)  # read-only or under a file: refused now, before any work
    return output


def check_output_dir(output: str | Path, inputs: Iterable[str | Path] = (), *, overwrite: bool = False,
                     flag: str = "--overwrite", inside_input_ok: bool = True) -> Path:
    """Check that `output` may be written (see the module rule); returns it. Raises InputError
    naming the folder and what was expected; writes and deletes nothing.

    inputs: files or folders the run reads (a missing one is ignored).
    flag: the option that allows replacing, as the user typed it (for the message).
    inside_input_ok: False refuses an output folder inside an input folder too (for verbs that
        search their input folder recursively: a second run would read the first run's output).
    """
    output = check_not_input(output, inputs, inside_input_ok=inside_input_ok)
    if not output.exists() or not any(output.iterdir()):
        return output
    if not overwrite:
        raise InputError(f"output folder {output} already exists and is not empty; choose another folder or pass {flag} "
                         "(which replaces only a folder meddiff wrote)")
    if not written_by_meddiff(output):
        raise InputError(f"output folder {output} was not written by meddiff (it has no {MARKER}); refusing to replace it "
                         "with --overwrite: choose another folder or empty it yourself")
    return output


def mark(folder: str | Path, verb: str, **info: object) -> Path:
    """Write meddiff's marker into `folder` (created if missing): the folder is then meddiff's to replace."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    from .. import __version__

    doc = {"written_by": "meddiff", "verb": verb, "meddiff_version": __version__,
           "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **info}
    path = folder / MARKER
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
    return path
