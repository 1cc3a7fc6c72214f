"""Output folders meddiff may write into, and the only ones it may ever replace.

Rule (every verb that writes a folder: prepare, sample, train, evaluate, demo, study create):

- An output folder that equals an input, or contains one, is refused, with or without
  ``--overwrite``: replacing it would delete the input.
- A missing or empty folder is used.
- A non-empty folder is refused unless ``--overwrite`` is given, and ``--overwrite`` only
  replaces a folder that meddiff itself wrote: one holding the marker file ``MARKER``
  (written into every output folder by :func:`mark`). A user's folder is never replaced.
- ``--overwrite`` replaces only a folder the same verb wrote (the marker names it): a reader
  study (``study.sqlite`` holds the readers' answers), a training run (its checkpoints), a
  prepared data set are never cleared or written into by another verb, and :func:`mark`
  never relabels another verb's folder.
- A folder holding only what an interrupted meddiff left (temporary files of the marker or of
  an output, ``.NAME.m<pid>@<host>.XXXX.tmp``) counts as empty: those leftovers are meddiff's and are
  removed, unless their owner process still runs on this machine (then the folder is in use).
- A run that is killed leaves a marker saying ``"complete": false`` (verbs that resume: sample).
  The same command run again completes it (the marker's ``run`` key, a hash of inputs and
  settings, must match); any other run into it is refused unless ``--overwrite`` is given.
- ``--overwrite`` and a resumed run first delete the temporary files killed writes left anywhere
  in the folder (meddiff.io.atomic.stale; a live process's are kept).

Paths are compared after resolving symbolic links, so ``d/.`` or a link to ``d`` is ``d``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterable

from ..errors import InputError
from .atomic import atomic_write_text, check_writable_dir, on_this_machine, owner_of, owner_running, owner_tag, stale

MARKER = ".meddiff-output.json"


def _kind(path: Path) -> str:
    """'a file', 'a FIFO (named pipe)', 'a character device', ... for messages."""
    import stat  # noqa: PLC0415

    mode = path.stat().st_mode
    for test, name in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "a file"


def _is_within(child: Path, parent: Path) -> bool:
    """True if `child` is `parent` or lies inside it (both resolved)."""
    return child == parent or parent in child.parents


def written_by_meddiff(folder: str | Path) -> bool:
    """True if `folder` holds meddiff's marker file."""
    return (Path(folder) / MARKER).is_file()


def marker(folder: str | Path) -> dict | None:
    """The marker's contents, {} for one that cannot be read, None without a marker."""
    path = Path(folder) / MARKER
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def marker_verb(folder: str | Path) -> str | None:
    """The verb that wrote `folder` ("prepare", "sample", "study create", ...), "" for a marker that names
    none (older meddiff) or cannot be read, None without a marker."""
    doc = marker(folder)
    return None if doc is None else str(doc.get("verb", ""))


def _holds(folder: Path) -> str:
    """What would be lost in `folder` (for messages)."""
    if (folder / "study.sqlite").is_file():
        return " (a reader study: study.sqlite holds the readers' answers)"
    if (folder / "checkpoints").is_dir():
        return " (a training run: checkpoints/ holds its weights)"
    return ""


def _leftover(p: Path) -> bool:
    """A temporary file/folder an interrupted meddiff write leaves (atomic_path / atomic_dir / mark names)."""
    return p.name.startswith(".") and (p.name.endswith(".tmp") or ".tmp." in p.name or ".old-" in p.name)


def remove_leftovers(folder: str | Path, recursive: bool = False) -> list[Path]:
    """Delete the temporary files/folders interrupted meddiff writes left in `folder` (and below it with
    `recursive`); a live process's (meddiff.io.atomic.stale False) are kept. Returns what was removed."""
    import shutil  # noqa: PLC0415

    folder = Path(folder)
    gone = []
    if folder.is_dir():
        for p in list(folder.iterdir()):
            if _leftover(p) and stale(p) is not False:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
                gone.append(p)
            elif recursive and p.is_dir() and not p.is_symlink():
                gone += remove_leftovers(p, recursive=True)
    return gone


def _live_owner(folder: Path, doc: dict | None) -> str | None:
    """The owner (m<pid>@<host>) of another meddiff process that may still be writing `folder`: the owner of an
    unfinished run's marker, or of a temporary file in it (this process's own are a failed write's)."""
    me = owner_tag()
    owner = (doc or {}).get("owner")
    if isinstance(owner, str) and (doc or {}).get("complete") is False and owner != me and owner_running(owner):
        return owner
    for p in folder.iterdir():
        tag = owner_of(p) if _leftover(p) else None
        if tag is not None and tag != me and owner_running(tag):
            return tag
    return None


def check_not_input(output: str | Path, inputs: Iterable[str | Path | None] = (), *, inside_input_ok: bool = True) -> Path:
    """Refuse (InputError) an output that is a file, equals an input or contains one (see check_output_dir)."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise InputError(f"output {output} is {_kind(output)}; expected a folder (or a path that does not exist yet)")
    out = output.resolve()
    for inp in inputs:
        if inp is None:
            continue
        try:
            src = Path(inp).resolve(strict=Path(inp).is_symlink())
        except (RuntimeError, OSError) as e:  # a link loop (Python 3.11: RuntimeError; 3.13: OSError ELOOP)
            raise InputError(f"{inp}: a symbolic link that loops (it leads back to itself: {e}); expected a file or "
                             "folder") from None
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
                     flag: str = "--overwrite", inside_input_ok: bool = True, verb: str | None = None,
                     resume: str | None = None) -> Path:
    """Check that `output` may be written (see the module rule); returns it. Raises InputError
    naming the folder and what was expected; writes and deletes nothing.

    inputs: files or folders the run reads (a missing one is ignored).
    flag: the option that allows replacing, as the user typed it (for the message).
    Deletes nothing but the temporary files of killed writes (see the module rule).
    inside_input_ok: False refuses an output folder inside an input folder too (for verbs that
        search their input folder recursively: a second run would read the first run's output).
    verb: the verb about to write; a folder another verb wrote is refused even with `flag`.
    resume: the run key (see :func:`mark`) of a verb that can complete an unfinished run of itself.
    """
    output = check_not_input(output, inputs, inside_input_ok=inside_input_ok)
    if not output.exists() or not any(output.iterdir()):
        return output
    doc = marker(output)
    live = _live_owner(output, doc)
    if live is not None and (not overwrite or on_this_machine(live)):
        where = "" if on_this_machine(live) else f"; if it has stopped on that machine, pass {flag}"
        raise InputError(f"output folder {output} is being written by a meddiff run that is still running (process "
                         f"{live}): wait for it to finish or choose another folder{where}")
    if all(_leftover(p) for p in output.iterdir()):  # only what an interrupted meddiff left
        remove_leftovers(output)
        return output
    if doc is not None and doc.get("complete") is False and doc.get("verb") == verb and not overwrite:
        if resume is not None and doc.get("run") == resume:
            remove_leftovers(output, recursive=True)
            return output  # the same run, killed before it ended: complete it
        raise InputError(f"output folder {output} holds an unfinished `meddiff {verb}` run (it stopped before completing) "
                         f"with other inputs or settings; run that same command again to complete it, or pass {flag} "
                         "to start over")
    if not overwrite:
        raise InputError(f"output folder {output} already exists and is not empty; choose another folder or pass {flag} "
                         "(which replaces only a folder meddiff wrote)")
    if not written_by_meddiff(output):
        raise InputError(f"output folder {output} was not written by meddiff (it has no {MARKER}); refusing to replace it "
                         "with --overwrite: choose another folder or empty it yourself")
    other = marker_verb(output)
    owner = {"study.sqlite": "study create", "checkpoints": "train"}
    if verb is not None and not other:  # an old or unreadable marker: what the folder holds names its verb
        other = next((v for name, v in owner.items() if (output / name).exists()), other)
    if verb is not None and other and other != verb:
        raise InputError(f"output folder {output} was written by `meddiff {other}`{_holds(output)}; {flag} replaces only a "
                         f"folder written by `meddiff {verb}`: choose another output folder")
    remove_leftovers(output, recursive=True)  # what killed writes left inside the folder being replaced
    return output


# Folders this process claimed new (missing or empty before its marker): (folder, the topmost folder
# the claim created, or None when `folder` existed empty). A run that fails removes them again.
_CLAIMED: list[tuple[Path, Path | None]] = []


def _created_top(folder: Path) -> Path | None:
    top = None
    probe = folder
    while not probe.exists() and probe.parent != probe:
        top, probe = probe, probe.parent
    return top


def forget_claims() -> None:
    """Start of a command: nothing claimed yet."""
    _CLAIMED.clear()


def discard_claims() -> list[Path]:
    """A command failed: remove every output folder it claimed new (created by it, or empty before it), so a
    failed run leaves nothing. A folder holding a training checkpoint is kept (the weights are work done).
    Returns the folders removed or emptied."""
    import shutil  # noqa: PLC0415

    done = []
    for folder, top in reversed(_CLAIMED):
        if not folder.is_dir() or any((folder / "checkpoints").glob("step_*")):
            continue
        if top is not None:
            shutil.rmtree(top, ignore_errors=True)
        else:
            for child in folder.iterdir():
                shutil.rmtree(child, ignore_errors=True) if child.is_dir() and not child.is_symlink() else child.unlink(missing_ok=True)
        done.append(folder)
    _CLAIMED.clear()
    return done


def mark(folder: str | Path, verb: str, **info: object) -> Path:
    """Write meddiff's marker into `folder` (created if missing): the folder is then meddiff's to replace.
    A folder that was missing or empty is remembered as this command's claim (see :func:`discard_claims`).
    info: recorded too; a verb that resumes passes complete=False and run=KEY (a hash of its inputs and
    settings) at its first write and complete=True at its end (see check_output_dir's `resume`)."""
    folder = Path(folder)
    if not (folder / MARKER).exists() and (not folder.exists() or (folder.is_dir() and not any(folder.iterdir()))):
        _CLAIMED.append((folder.absolute(), _created_top(folder.absolute())))
    folder.mkdir(parents=True, exist_ok=True)
    from .. import __version__

    other = marker_verb(folder)
    if other and other != verb:
        raise InputError(f"output folder {folder} was written by `meddiff {other}`{_holds(folder)}; "
                         f"`meddiff {verb}` does not write into it: choose another output folder")
    doc = {"written_by": "meddiff", "verb": verb, "meddiff_version": __version__,
           "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "owner": owner_tag(), **info}
    path = folder / MARKER
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
    return path
