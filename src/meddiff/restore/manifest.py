"""The study manifest of an archive run: its units of work, their content hashes and output names.

A unit is one ImageItem of `meddiff.io.find_images` (the discovery `meddiff sample` uses on a
folder): a DICOM series (by SeriesInstanceUID), a DICOM file, a NIfTI volume or an image file.

    OUT/manifest.csv    one row per unit: unit, kind, source (relative to --input), files, bytes,
                        stat_sha256, sha256, output (relative to OUT), suffix
    OUT/manifest.json   the digest of the input tree's listing it was built from, and counts

unit: the first 16 hex digits of SHA-256(relative source path, SeriesInstanceUID): stable as the
archive grows, and no patient data (nor a DICOM UID) in any name.
stat_sha256: SHA-256 of the unit's (relative path, size, mtime_ns) per file: the cheap fingerprint.
sha256: SHA-256 of the unit's files' names, sizes and bytes (the content hash the done-sidecars
compare); computed only for a unit whose stat fingerprint differs from the previous manifest's.
output / suffix: the first output path, and the '', '_2', ... that tells apart inputs sharing a
path (several series in one folder); planned here for the whole archive in manifest order, so
names do not depend on which units a run, a shard or a worker processed (restore.files.unique_suffix).

Fast path of a re-run: the input tree is walked (names and os.stat only); when the digest of that
listing equals the stored one, the stored units are used as they are, no input file is opened.
Otherwise the folder is discovered again (find_images reads DICOM headers) and hashes are reused for
units whose stat fingerprint is unchanged.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import FieldError, InputError
from ..io import find_images
from ..io.atomic import atomic_write_text
from ..io.readers import ImageItem
from .files import Request, output_path, unique_suffix

COLUMNS = ("unit", "kind", "source", "files", "bytes", "stat_sha256", "sha256", "output", "suffix")


@dataclass(frozen=True)
class Unit:
    """One unit of work. item: the discovered ImageItem (None when taken from a stored manifest)."""

    id: str
    kind: str
    source: str  # relative to the input folder ('.' for the folder itself)
    files: int
    bytes: int
    stat_sha256: str
    sha256: str
    output: str  # relative to the output folder
    suffix: str
    item: ImageItem | None = None

    def row(self) -> dict:
        return {c: getattr(self, "id" if c == "unit" else c) for c in COLUMNS}


def tag_of(shard: tuple[int, int] | None) -> str:
    """'' for a whole run, '.shard-I-of-N' for a shard (its own manifest and failed list)."""
    return "" if shard is None or shard[1] == 1 else f".shard-{shard[0]}-of-{shard[1]}"


def unit_id(rel: str, series_uid: str) -> str:
    return hashlib.sha256(f"{rel}\0{series_uid}".encode()).hexdigest()[:16]


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() if path != root else "."


def walk_listing(root: Path) -> str:
    """SHA-256 of every file's (relative path, size, mtime_ns) under `root`, in the walk find_images
    makes (meddiff.io.readers: hidden files/folders and DICOMDIR skipped); opens no file."""
    from ..io.readers import _walk  # the discovery's own walk, so that both see the same files

    digest = hashlib.sha256()
    for path in _walk(root):
        st = os.stat(path)
        digest.update(f"{_rel(path, root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def stat_fingerprint(files: tuple[Path, ...], root: Path) -> tuple[str, int]:
    """(SHA-256 of the files' relative paths, sizes and mtimes, total bytes): no file is read."""
    digest, total = hashlib.sha256(), 0
    for f in sorted(files):
        st = os.stat(f)
        total += st.st_size
        digest.update(f"{_rel(f, root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest(), total


def content_sha256(files: tuple[Path, ...], root: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of the files' relative paths, sizes and bytes (in path order)."""
    digest = hashlib.sha256()
    for f in sorted(files):
        digest.update(f"{_rel(f, root)}\0{os.path.getsize(f)}\n".encode())
        with open(f, "rb") as fh:
            while block := fh.read(chunk):
                digest.update(block)
    return digest.hexdigest()


def read_manifest(path: Path) -> list[Unit]:
    """The units of one manifest CSV, in its order ([] if there is none)."""
    if not path.is_file():
        return []
    try:
        with open(path, newline="") as f:
            return [Unit(row["unit"], row["kind"], row["source"], int(row["files"]), int(row["bytes"]),
                         row["stat_sha256"], row["sha256"], row["output"], row["suffix"]) for row in csv.DictReader(f)]
    except (KeyError, ValueError, csv.Error) as e:
        raise InputError(f"{path}: not a manifest meddiff wrote ({e}); expected columns {', '.join(COLUMNS)}") from None


def read_manifests(out: Path) -> dict[str, Unit]:
    """The units of every manifest*.csv in `out` (a whole run's and shards'), by unit id; rows with a
    content hash win over rows without."""
    units: dict[str, Unit] = {}
    for path in sorted(out.glob("manifest*.csv")):
        for u in read_manifest(path):
            if u.id not in units or (u.sha256 and not units[u.id].sha256):
                units[u.id] = u
    return units


def stored_listing(out: Path, tag: str) -> str | None:
    try:
        return json.loads((out / f"manifest{tag}.json").read_text())["listing_sha256"]
    except (OSError, ValueError, KeyError):
        return None


def discover(args: Request) -> list[Unit]:
    """Every unit under args.input, in find_images order, with output names planned for the whole
    archive (no hashes yet: see with_hashes)."""
    root = args.input
    items = find_images(root)
    used: set[Path] = set()
    units = []
    for item in items:
        suffix = unique_suffix(args, item, used)
        primary = output_path(args.output, item, args.format, f"restored{suffix}", input_root=root,
                              patient_folder=args.keep_patient_tags)
        rel = _rel(item.path, root)
        stat, size = stat_fingerprint(item.files, root)
        units.append(Unit(unit_id(rel, item.series_uid), item.kind, rel, len(item.files), size, stat, "",
                          primary.relative_to(args.output).as_posix(), suffix, item))
    return units


def with_hashes(units: list[Unit], previous: dict[str, Unit], root: Path, wanted: set[str] | None = None) -> list[Unit]:
    """Units with their content hash: the previous manifest's when the stat fingerprint is unchanged,
    else computed by reading the files (only for ids in `wanted`, if given; others keep '')."""
    out = []
    for u in units:
        old = previous.get(u.id)
        if old is not None and old.stat_sha256 == u.stat_sha256 and old.sha256:
            u = replace(u, sha256=old.sha256)
        elif wanted is None or u.id in wanted:
            assert u.item is not None
            u = replace(u, sha256=content_sha256(u.item.files, root))
        out.append(u)
    return out


def write_manifest(out: Path, units: list[Unit], listing: str, tag: str, input_root: Path) -> Path:
    """OUT/manifest{tag}.csv and its .json (listing digest, counts), each written atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for u in units:
        writer.writerow(u.row())
    path = out / f"manifest{tag}.csv"
    atomic_write_text(path, buf.getvalue())
    doc = {"listing_sha256": listing, "units": len(units), "hashed": sum(bool(u.sha256) for u in units),
           "input": str(input_root)}
    atomic_write_text(out / f"manifest{tag}.json", json.dumps(doc, indent=1) + "\n")
    return path


def shard_of(units: list[Unit], shard: tuple[int, int] | None) -> list[Unit]:
    """Shard I of N: units I-1, I-1+N, I-1+2N, ... of the manifest order (as nnU-Net's part_id::num_parts)."""
    if shard is None:
        return units
    i, n = shard
    return units[i - 1 :: n]


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' -> (I, N) with 1 <= I <= N."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise FieldError("shard", text, "expected I/N, e.g. 1/4 (shard I of N, counted from 1)") from None
    if not 1 <= i <= n:
        raise FieldError("shard", text, "expected 1 <= I <= N")
    return i, n
