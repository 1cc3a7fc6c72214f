"""Idempotent units of an archive run: restore one unit, write it atomically, then mark it done.

Order of a unit's writes: every product (restored / mean / std / sample<k>, each with its
provenance sidecar) through meddiff.io's atomic writers (temporary file, fsync, rename), then the
done-sidecar ``OUT/.units/<unit>.json``, also atomic. A unit without a matching done-sidecar is
redone; its outputs have fixed names (restore.manifest), so a redo replaces them instead of adding a
copy, and temporaries a killed writer left behind (``.<name>.<8 chars>.tmp*``, ``.<name>.old-*``)
are deleted first: no duplicate, no half-written file.

The done-sidecar's ``key`` is what the result depends on: the unit's content hash, the checkpoint's
SHA-256, every setting of the request that changes pixels (sampler, steps, seed, precision, ...)
and the meddiff version. A re-run skips a unit whose key matches and whose outputs exist. A unit that failed on its input
(a MeddiffError: corrupt, unreadable, refused) leaves ``OUT/.units/<unit>.failed.json`` with the
same key: a re-run lists it in failed.csv again without reading it; a changed file or setting retries it.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MeddiffError
from ..io.atomic import atomic_write_text
from .files import Request, output_path
from .manifest import Unit
from ..data.degrade import build_degradation
from ..errors import CheckpointError
from ..samplers.progress import Progress
from .files import Run, restore_file, run_provenance
from .restorers import located, restorer_for as choose, validate_request

UNITS_DIR = ".units"
_PRODUCT = r"(?:restored|mean|std|uncertainty|lower|upper|sample\d+)"
_TEMP = re.compile(r"^\.(?P<name>.+?)\.(?:m\d+@[A-Za-z0-9-]+\.)?(?:[a-z0-9_]{8}\.tmp.*|old-[0-9a-f]{8})$")  # atomic names


def sidecar_path(out: Path, unit_id: str) -> Path:
    return out / UNITS_DIR / f"{unit_id}.json"


def failure_path(out: Path, unit_id: str) -> Path:
    return out / UNITS_DIR / f"{unit_id}.failed.json"


def _matching(path: Path, unit: Unit, key: dict) -> dict | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if doc.get("key") == {**key, "input_sha256": unit.sha256} else None


def done_sidecar(out: Path, unit: Unit, key: dict) -> dict | None:
    """The unit's done-sidecar if its key matches (content hash + settings) and its outputs exist, else None."""
    doc = _matching(sidecar_path(out, unit.id), unit, key)
    if doc is None or not all(os.path.exists(out / rel) for rel in doc.get("outputs", ())):
        return None
    return doc


def known_failure(out: Path, unit: Unit, key: dict) -> dict | None:
    """The record of a final failure (a bad input) of this unit with the same content and settings,
    which would fail the same way again; None if there is none."""
    return _matching(failure_path(out, unit.id), unit, key)


def product_pattern(unit: Unit) -> re.Pattern:
    """Names of every product (and its provenance .json) the unit may write, in its output folder."""
    name = Path(unit.output).name
    mark = f"_restored{unit.suffix}"
    stem, ext = name[: name.rindex(mark)], name[name.rindex(mark) + len(mark):]
    return re.compile(rf"^{re.escape(stem)}_{_PRODUCT}{re.escape(unit.suffix)}(?:{re.escape(ext)}|\.json)?$")


def remove_stale_temporaries(out: Path, units: list[Unit]) -> list[Path]:
    """Delete the temporary files/folders a killed writer left for these units' products; returns them."""
    import shutil

    by_folder: dict[Path, list[re.Pattern]] = {}
    for u in units:
        by_folder.setdefault((out / u.output).parent, []).append(product_pattern(u))
        by_folder.setdefault(out / UNITS_DIR, []).append(re.compile(rf"^{u.id}(?:\.failed)?\.json$"))
    removed = []
    for folder, patterns in by_folder.items():
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            continue
        for name in names:
            m = _TEMP.match(name)
            if m and any(p.match(m["name"]) for p in patterns):
                path = folder / name
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink(missing_ok=True)
                removed.append(path)
    return removed


@dataclass
class UnitResult:
    """What became of one unit. final: a failure that retrying cannot change (a bad input or setting)."""

    unit: str
    ok: bool
    slices: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # CPU time of the worker process over the unit (wall > CPU: it waited for a core)
    outputs: tuple[str, ...] = ()
    reason: str = ""
    final: bool = False
    attempts: int = 1
    worker: str = ""
    sidecar: dict = field(default_factory=dict)


def restorer_for(args: Request, device):
    """The Restorer of the request: the choice restore.restorers.restore makes (the same function), without
    running the file loop. args.checkpoint must be located (restore.restorers.located)."""
    validate_request(args)
    return choose(args, device)


class UnitWorker:
    """The model loaded once (on `device`); `run(unit)` restores one unit and marks it done.

    key: settings_key of the run (the driver computes it once and every worker writes the same)."""

    def __init__(self, args: Request, key: dict, device):
        args = located(args)
        self.args, self.key, self.device = args, key, device
        self.restorer = restorer_for(args, device)
        self.task, self.restore_slices, self.describe = self.restorer.task, self.restorer.restore_slices, self.restorer.describe
        self.deg = build_degradation(self.task)
        self.provenance = run_provenance(args, self.restorer)
        self.name = f"{os.uname().nodename}:{os.getpid()}"
        if self.provenance["checkpoint_sha256"] != key["checkpoint_sha256"]:  # another file on this node

            raise CheckpointError(f"{args.checkpoint} on {self.name} has SHA-256 {self.provenance['checkpoint_sha256']}, "
                                  f"the run's is {key['checkpoint_sha256']}; expected the same model file on every node")

    def _names_taken(self, unit: Unit, item) -> set:
        """restore.files.unique_suffix's `used` set that makes it choose the manifest's suffix; the
        extra entry also stops write_products re-marking the folder (the driver marked it)."""
        k = int(unit.suffix[1:]) if unit.suffix else 1
        a = self.args
        taken = {output_path(a.output, item, a.format, "" if j == 1 else f"_{j}", input_root=a.input,
                             patient_folder=a.keep_patient_tags) for j in range(1, k)}
        return taken | {a.output / UNITS_DIR}

    def run(self, unit: Unit) -> UnitResult:
        t0, c0 = time.perf_counter(), time.process_time()
        out = self.args.output
        try:
            remove_stale_temporaries(out, [unit])
            run = Run(self.args, self.task, self.deg, self.restore_slices, self.describe, self.provenance,
                      Progress(False), used=self._names_taken(unit, unit.item), domain_check=self.restorer.domain_check)
            written = restore_file(run, unit.item)
            outputs = tuple(p.relative_to(out).as_posix() for p in written)
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
            doc = {"unit": unit.id, "source": unit.source, "key": {**self.key, "input_sha256": unit.sha256},
                   "outputs": outputs, "slices": run.bar.slices, "restoration": self.describe,
                   "device": str(self.device), "seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3),
                   "domain": [asdict(r) for r in run.reports]}
            atomic_write_text(sidecar_path(out, unit.id), json.dumps(doc, indent=1, default=str) + "\n")
            failure_path(out, unit.id).unlink(missing_ok=True)
            return UnitResult(unit.id, True, run.bar.slices, seconds, cpu, outputs, worker=self.name, sidecar=doc)
        except MeddiffError as e:  # a bad input or setting: the same next time, so recorded and not retried
            doc = {"unit": unit.id, "source": unit.source, "key": {**self.key, "input_sha256": unit.sha256}, "reason": str(e)}
            atomic_write_text(failure_path(out, unit.id), json.dumps(doc, indent=1, default=str) + "\n")
            return UnitResult(unit.id, False, reason=str(e), final=True, seconds=time.perf_counter() - t0, worker=self.name)
        except Exception as e:  # noqa: BLE001 - anything else (out of memory, a full disk) may pass on a retry
            return UnitResult(unit.id, False, reason=f"{type(e).__name__}: {e}", seconds=time.perf_counter() - t0,
                              worker=self.name)
