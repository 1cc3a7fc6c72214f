"""Restore an archive: manifest -> units not done yet -> an engine -> done-sidecars, failed.csv, summary.

    from meddiff.restore import Request
    from meddiff.restore.archive import ArchiveOptions, run_archive

    summary = run_archive(Request(output=Path("out"), input=Path("pacs_export"), checkpoint="sr_x4_general_1step"),
                          ArchiveOptions(engine="ray", workers=4))

`meddiff sample --engine local|ray` or `--shard I/N` takes this path (without them, `meddiff sample` is
the plain loop of restore.files). Steps:

1. the output folder: new or empty, or an archive folder meddiff wrote (resumed), or with
   --overwrite one meddiff wrote; never an input nor inside the input folder;
2. the manifest (restore.manifest): units, content hashes (size + mtime fast path), output names;
3. units whose done-sidecar matches (restore.units) are skipped without reading their input (so
   are units that failed on the same bytes and settings before: listed in failed.csv again);
   --overwrite redoes every unit; with --shard I/N only every N-th unit from the I-th is this run's;
4. the engine restores the rest; each unit is written atomically then marked done; a unit that
   fails its retries goes to OUT/failed.csv (unit, source, attempts, reason) and the others go on;
5. OUT/domain_check.json from every unit's sidecar; one summary line (done, skipped, failed,
   seconds, slices per second).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import FieldError
from ..io.atomic import atomic_write_text
from ..io.outdir import MARKER, check_not_input, check_output_dir, mark
from . import manifest as mf
from .files import Request
from .resume import settings_key
from .units import UnitResult, done_sidecar, known_failure, remove_stale_temporaries

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class ArchiveOptions:
    """How to run the units: engine, Ray cluster and workers, retries, the shard of a job array."""

    engine: str = "local"
    address: str | None = None  # ray: None = a local cluster, "auto" = this node's, "HOST:PORT" = a remote head
    workers: int | None = None  # ray: None = as many as the cluster's CPUs (or GPUs / gpus_per_worker)
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    retries: int = 2  # more attempts for a unit whose failure may pass (a lost worker)
    shard: tuple[int, int] | None = None  # (I, N): this run does units I-1, I-1+N, ... of the manifest


@dataclass
class ArchiveSummary:
    units: int = 0  # this run's (its shard's) units
    done: int = 0
    skipped: int = 0
    failed: int = 0
    slices: int = 0
    seconds: float = 0.0
    lost_workers: int = 0
    results: list[UnitResult] = field(default_factory=list)

    def line(self) -> str:
        rate = self.slices / self.seconds if self.seconds > 0 else 0.0
        lost = f", {self.lost_workers} attempt(s) lost with a worker" if self.lost_workers else ""
        return (f"{self.units} units: {self.done} done, {self.skipped} skipped, {self.failed} failed{lost}; "
                f"{self.slices} slices in {self.seconds:.1f} s ({rate:.2f} slices/s)")


def is_archive_folder(out: Path) -> bool:
    """True if `out` holds meddiff's marker from an archive run (which a re-run resumes)."""
    try:
        doc = json.loads((out / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return doc.get("verb") == "sample" and bool(doc.get("archive"))


def claim(args: Request) -> None:
    """Check and mark the output folder (module steps 1)."""
    inputs = [p for p in (args.input, args.mask) if p is not None]
    if args.input is None or not args.input.is_dir():
        raise FieldError("input", args.input, "{engine} / {shard} restore an archive folder; expected a folder "
                         "(for one file leave them out)")
    out = args.output
    if out.is_dir() and any(out.iterdir()) and is_archive_folder(out):
        check_not_input(out, inputs, inside_input_ok=False)
    else:
        check_output_dir(out, inputs, overwrite=args.overwrite, inside_input_ok=False)
    mark(out, "sample", archive=True)


def plan(args: Request, key: dict, shard) -> tuple[list[mf.Unit], list[mf.Unit], dict[str, dict], dict[str, dict]]:
    """(every unit, this run's units to do, done-sidecars of the skipped units, records of units that
    failed on the same input and settings before); writes the manifest when it had to be rebuilt."""
    root, out, tag = args.input, args.output, mf.tag_of(shard)
    listing = mf.walk_listing(root)
    stored = mf.read_manifest(out / f"manifest{tag}.csv")

    def settled(units: list[mf.Unit]) -> tuple[dict, dict]:
        if args.overwrite:
            return {}, {}
        mine = mf.shard_of(units, shard)
        done = {u.id: doc for u in mine if (doc := done_sidecar(out, u, key)) is not None}
        failed = {u.id: doc for u in mine if u.id not in done and (doc := known_failure(out, u, key)) is not None}
        return done, failed

    units: list[mf.Unit] = []
    done: dict[str, dict] = {}
    failed: dict[str, dict] = {}
    if stored and mf.stored_listing(out, tag) == listing and all(u.sha256 for u in mf.shard_of(stored, shard)):
        units = stored  # the input tree is as the manifest saw it: no file is opened
        done, failed = settled(units)
    if not units or len(done) + len(failed) < len(mf.shard_of(units, shard)):  # work to do: ImageItems are needed
        found = mf.discover(args)
        units = mf.with_hashes(found, mf.read_manifests(out), root, wanted={u.id for u in mf.shard_of(found, shard)})
        done, failed = settled(units)
        mf.write_manifest(out, units, listing, tag, root)
    todo = [u for u in mf.shard_of(units, shard) if u.id not in done and u.id not in failed]
    return units, todo, done, failed


def make_engine(options: ArchiveOptions, args: Request, key: dict, device: str):
    if options.engine == "local":
        from ..config.device import pick_device
        from .engines.local import LocalEngine

        return LocalEngine(args, key, pick_device(device), retries=options.retries)
    if options.engine == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise FieldError("engine", "ray", text="{engine} ray needs Ray: pip install 'meddiff[ray]' (or pip install ray)") from None
        from .engines.ray_engine import RayEngine

        return RayEngine(args, key, address=options.address, workers=options.workers, gpus_per_worker=options.gpus_per_worker,
                         cpus_per_worker=options.cpus_per_worker, retries=options.retries, device=device)
    raise FieldError("engine", options.engine, f"expected one of {', '.join(ENGINES)}")


def checkpoint_sha256(args: Request) -> str | None:
    from .files import run_provenance

    return run_provenance(args)["checkpoint_sha256"] if args.checkpoint is not None else None


def run_archive(args: Request, options: ArchiveOptions = ArchiveOptions(), device: str = "auto", engine=None) -> ArchiveSummary:
    """Restore the archive args.input into args.output (module steps 1-5); returns the summary.
    engine: an Engine to use instead of the one options name (tests, benchmarks)."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    if options.retries < 0:
        raise FieldError("retries", options.retries, "expected >= 0")
    claim(args)
    key = settings_key(args, checkpoint_sha256(args))
    units, todo, done, known = plan(args, key, options.shard)
    summary = ArchiveSummary(units=len(todo) + len(done) + len(known), skipped=len(done), failed=len(known))
    for doc in known.values():  # failed before on the same bytes and settings: reported, not read again
        summary.results.append(UnitResult(doc["unit"], False, reason=f"unchanged since it failed: {doc['reason']}",
                                          final=True, attempts=0))
    sidecars = dict(done)
    bar = tqdm(total=len(todo), unit="unit", desc="archive", disable=not args.progress or not todo, dynamic_ncols=True)

    def on_result(result: UnitResult) -> None:
        summary.results.append(result)
        if result.ok:
            summary.done += 1
            summary.slices += result.slices
            sidecars[result.unit] = result.sidecar
        else:
            summary.failed += 1
            log.warning("unit %s failed after %d attempt(s): %s", result.unit, result.attempts, result.reason)
        elapsed = time.perf_counter() - t0
        bar.set_postfix_str(f"{summary.slices} slices, {summary.slices / max(elapsed, 1e-9):.1f} slices/s, "
                            f"{summary.failed} failed", refresh=False)
        bar.update(1)

    engine = engine or (make_engine(options, args, key, device) if todo else None)
    try:
        if todo:
            engine.run(todo, on_result)
    finally:
        bar.close()
        summary.lost_workers = getattr(engine, "lost", 0)
        remove_stale_temporaries(args.output, todo)  # of units whose last attempt was killed mid-write
        write_failed(args.output, mf.tag_of(options.shard), units, summary.results)
    write_domain_check(args.output, mf.tag_of(options.shard), units, sidecars)
    summary.seconds = time.perf_counter() - t0
    return summary


def write_failed(out: Path, tag: str, units: list[mf.Unit], results: list[UnitResult]) -> Path:
    """OUT/failed{tag}.csv: this run's failed units (unit, source, attempts, reason); a header only if none."""
    source = {u.id: u.source for u in units}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["unit", "source", "attempts", "reason"])
    for r in results:
        if not r.ok:
            w.writerow([r.unit, source.get(r.unit, ""), r.attempts, " ".join(r.reason.split())])
    path = out / f"failed{tag}.csv"
    atomic_write_text(path, buf.getvalue())
    return path


def write_domain_check(out: Path, tag: str, units: list[mf.Unit], sidecars: dict[str, dict]) -> None:
    """OUT/domain_check{tag}.json: the domain findings of this run's done units, in manifest order (as restore.files)."""
    reports = [r for u in units for r in sidecars.get(u.id, {}).get("domain", ())]
    if reports:
        atomic_write_text(out / f"domain_check{tag}.json", json.dumps(reports, indent=1) + "\n")
