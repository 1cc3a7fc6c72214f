"""Completing a killed `meddiff sample` run (issue 28 K4): the run's key, and the log of inputs done.

A run marks its output folder ``"complete": false`` with ``run = run_key(...)`` at its first write
and ``"complete": true`` at its end (meddiff.io.outdir.mark). After each input it appends one line
to ``OUT/.meddiff-done.jsonl`` (fsynced): the input's public name, the files written for it (relative
to OUT) and its domain report. The same command run again (same inputs and settings: the same key)
skips every input whose line is there and whose files all exist, writes the rest, then marks the
folder complete and removes the log. Each output is written atomically, so a file that exists is
whole. Sampling is seeded per input (the request's seed), so the completed folder is the one an
uninterrupted run writes.

`settings_key` is the part of a key shared by every input of a run; the archive engine
(restore.units) keys its done-sidecars with it too.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..io.outdir import marker

if TYPE_CHECKING:
    from .files import Request

DONE_LOG = ".meddiff-done.jsonl"
# Request fields that do not change a unit's pixels (where, whether a bar shows, the command line);
# the checkpoint path is replaced by its SHA-256.
_NOT_SETTINGS = {"output", "input", "progress", "overwrite", "argv", "checkpoint"}


def settings_key(args: Request, checkpoint_sha256: str | None) -> dict[str, Any]:
    """What a run's results depend on besides its inputs: the checkpoint's SHA-256, every setting of the
    request that changes pixels (sampler, steps, seed, precision, ...) and the meddiff version."""
    from .. import __version__

    settings = {f.name: getattr(args, f.name) for f in fields(args) if f.name not in _NOT_SETTINGS}
    settings = json.loads(json.dumps(settings, default=str))  # Paths and tuples as JSON has them
    return {"checkpoint_sha256": checkpoint_sha256, "meddiff_version": str(__version__), "settings": settings}


def run_key(args: Request, checkpoint_sha256: str | None) -> str:
    """A hash of the run's settings and of its input's absolute path (a hash: the path may name a patient;
    links are not followed, so a bad link fails in the output checks, with its own message)."""
    doc = {**settings_key(args, checkpoint_sha256), "input": os.path.abspath(args.input) if args.input else None}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32]


class DoneLog:
    """The inputs a run into `out` has finished: read back when it resumes an unfinished run with `key`
    (`resume`), else started empty (an old log is removed: --overwrite starts over)."""

    def __init__(self, out: Path, key: str, resume: bool = True):
        self.path, self.entries = Path(out) / DONE_LOG, {}
        doc = marker(out)
        if not (resume and doc is not None and doc.get("complete") is False and doc.get("run") == key):
            self.path.unlink(missing_ok=True)
        elif self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:  # the last line of a run killed mid-write
                    continue
                self.entries[entry["input"]] = entry

    def finished(self, name: str) -> dict | None:
        """The entry of input `name` if every file it lists exists, else None (the input is redone)."""
        entry = self.entries.get(name)
        if entry is None or not all((self.path.parent / f).is_file() for f in entry["outputs"]):
            return None
        return entry

    def record(self, name: str, outputs: list[Path], report) -> None:
        line = {"input": name, "outputs": [str(Path(p).relative_to(self.path.parent)) for p in outputs],
                "report": None if report is None else asdict(report)}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def close(self) -> None:
        self.path.unlink(missing_ok=True)
