"""The study's SQLite database: pairs, readers, their presentation order, and answers.

Durability: the database is in WAL mode with ``synchronous=FULL``, and every answer is one
``BEGIN IMMEDIATE ... COMMIT`` transaction, so an answer acknowledged to the browser is on disk
(it survives a killed server or a power cut). ``UNIQUE(reader_id, pair_id)`` makes a retried or
re-posted answer a no-op instead of a duplicate, and an answer is accepted only for the pair the
reader is being shown (their first unanswered pair), so answers cannot be changed afterwards.
"""

from __future__ import annotations

import re
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from meddiff.errors import InputError

STUDY_DB = "study.sqlite"
STUDY_JSON = "study.json"
SIDES = ("left", "right")
FEEDBACK = ("end", "none", "each")
# reader codes: letters and digits without look-alikes (0/O, 1/I/L)
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_RE = re.compile(r"^[A-Za-z0-9_-]{4,64}$")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pairs (
    pair_id INTEGER PRIMARY KEY,
    method TEXT NOT NULL,
    real_side TEXT NOT NULL CHECK (real_side IN ('left', 'right')),
    left_png TEXT NOT NULL,
    right_png TEXT NOT NULL,
    real_source TEXT NOT NULL,
    generated_source TEXT NOT NULL,
    slice INTEGER
);
CREATE TABLE IF NOT EXISTS readers (
    reader_id INTEGER PRIMARY KEY,
    label TEXT NOT NULL UNIQUE,
    code TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS schedule (
    reader_id INTEGER NOT NULL REFERENCES readers (reader_id),
    position INTEGER NOT NULL,
    pair_id INTEGER NOT NULL REFERENCES pairs (pair_id),
    PRIMARY KEY (reader_id, position),
    UNIQUE (reader_id, pair_id)
);
CREATE TABLE IF NOT EXISTS answers (
    answer_id INTEGER PRIMARY KEY,
    reader_id INTEGER NOT NULL REFERENCES readers (reader_id),
    pair_id INTEGER NOT NULL REFERENCES pairs (pair_id),
    choice TEXT NOT NULL CHECK (choice IN ('left', 'right')),
    correct INTEGER NOT NULL CHECK (correct IN (0, 1)),
    confidence INTEGER,
    rt_ms INTEGER,
    answered_at TEXT NOT NULL,
    UNIQUE (reader_id, pair_id)
);
CREATE TABLE IF NOT EXISTS sessions (
    sid TEXT PRIMARY KEY,
    reader_id INTEGER NOT NULL REFERENCES readers (reader_id),
    created_at TEXT NOT NULL
);
"""


def connect(path: str | Path) -> sqlite3.Connection:
    """Open the study database: autocommit mode (transactions are explicit), WAL, synchronous=FULL,
    foreign keys on, and a busy timeout so concurrent writers wait instead of failing."""
    conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def open_study_db(study: str | Path) -> sqlite3.Connection:
    """Connect to ``<study>/study.sqlite``; InputError if the folder is not a study."""
    path = Path(study) / STUDY_DB
    if not path.is_file():
        raise InputError(f"{study}: not a study folder (no {STUDY_DB}); expected a folder made by `meddiff study create`")
    conn = None
    try:
        conn = connect(path)
        conn.execute("SELECT key, value FROM meta LIMIT 1").fetchall()
    except sqlite3.DatabaseError as e:
        if conn is not None:
            conn.close()
        raise InputError(f"{path}: not a usable study database ({e}); expected the study.sqlite written by "
                         "`meddiff study create` (restore it from a backup)") from None
    return conn


def start_session(conn: sqlite3.Connection, reader_id: int) -> str:
    """A new server-side session for `reader_id`; returns its random id (kept in the signed cookie)."""
    sid = secrets.token_urlsafe(32)
    conn.execute("INSERT INTO sessions (sid, reader_id, created_at) VALUES (?, ?, ?)",
                 (sid, int(reader_id), datetime.now(timezone.utc).isoformat(timespec="seconds")))
    return sid


def session_reader(conn: sqlite3.Connection, sid: object, reader_id: object) -> sqlite3.Row | None:
    """The reader of a live session whose id and reader both match, else None (ended or forged)."""
    if not isinstance(sid, str) or not isinstance(reader_id, int):
        return None
    return conn.execute("SELECT r.reader_id, r.label FROM sessions s JOIN readers r ON r.reader_id = s.reader_id "
                        "WHERE s.sid = ? AND s.reader_id = ?", (sid, reader_id)).fetchone()


def end_sessions(conn: sqlite3.Connection, *, sid: str | None = None, reader_id: int | None = None) -> int:
    """Revoke one session (logout) or every session of a reader; returns how many ended."""
    if sid is not None:
        return conn.execute("DELETE FROM sessions WHERE sid = ?", (sid,)).rowcount
    return conn.execute("DELETE FROM sessions WHERE reader_id = ?", (int(reader_id),)).rowcount


def get_meta(conn: sqlite3.Connection) -> dict[str, str]:
    return {r["key"]: r["value"] for r in conn.execute("SELECT key, value FROM meta")}


def normalise_code(code: str) -> str:
    """Reader codes are compared case-insensitively, without surrounding blanks."""
    return code.strip().upper()


def new_codes(n: int, existing: set[str], length: int = 8) -> list[str]:
    """`n` random reader codes (``secrets``; 31^8 ~ 8.5e11 possibilities each) not in `existing`."""
    out: list[str] = []
    while len(out) < n:
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(length))
        if code not in existing and code not in out:
            out.append(code)
    return out


def reader_order(seed: int, reader_id: int, pair_ids: list[int], mode: str) -> list[int]:
    """Presentation order of the pairs for one reader: a permutation drawn from
    ``numpy.random.default_rng([seed, 1, reader_id])`` ("per-reader") or from
    ``default_rng([seed, 1])`` for everyone ("same"). Deterministic given the study seed."""
    key = [seed, 1, reader_id] if mode == "per-reader" else [seed, 1]
    perm = np.random.default_rng(key).permutation(len(pair_ids))
    return [pair_ids[i] for i in perm]


def add_readers(conn: sqlite3.Connection, n: int = 0, codes: list[str] | None = None) -> list[tuple[str, str]]:
    """Add readers (``n`` with random codes, or the given codes) and their presentation order.

    Returns [(label, code)] of the new readers; labels are ``reader<id>``. Codes must match
    ``[A-Za-z0-9_-]{4,64}`` and be unique (case-insensitively).
    """
    meta = get_meta(conn)
    seed, mode = int(meta["seed"]), meta["order"]
    existing = {r["code"] for r in conn.execute("SELECT code FROM readers")}
    if codes:
        bad = [c for c in codes if not CODE_RE.match(c.strip())]
        if bad:
            raise InputError(f"reader codes {bad!r}: expected 4-64 letters, digits, '_' or '-'")
        wanted = [normalise_code(c) for c in codes]
        dup = sorted({c for c in wanted if wanted.count(c) > 1 or c in existing})
        if dup:
            raise InputError(f"reader codes {dup!r} are given twice or already in use (codes are case-insensitive)")
    else:
        if n < 1:
            raise InputError(f"number of readers {n}: expected at least 1")
        wanted = new_codes(n, existing)
    pair_ids = [r["pair_id"] for r in conn.execute("SELECT pair_id FROM pairs ORDER BY pair_id")]
    added = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for code in wanted:
            rid = conn.execute("SELECT COALESCE(MAX(reader_id), 0) + 1 FROM readers").fetchone()[0]
            label = f"reader{rid}"
            conn.execute("INSERT INTO readers (reader_id, label, code) VALUES (?, ?, ?)", (rid, label, code))
            conn.executemany("INSERT INTO schedule (reader_id, position, pair_id) VALUES (?, ?, ?)",
                             [(rid, pos, pid) for pos, pid in enumerate(reader_order(seed, rid, pair_ids, mode))])
            added.append((label, code))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return added


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    next_pair: int | None  # pair id of the first unanswered pair in the reader's order


def progress(conn: sqlite3.Connection, reader_id: int) -> Progress:
    total = conn.execute("SELECT COUNT(*) FROM schedule WHERE reader_id = ?", (reader_id,)).fetchone()[0]
    done = conn.execute("SELECT COUNT(*) FROM answers WHERE reader_id = ?", (reader_id,)).fetchone()[0]
    row = conn.execute(
        "SELECT s.pair_id FROM schedule s LEFT JOIN answers a ON a.reader_id = s.reader_id AND a.pair_id = s.pair_id "
        "WHERE s.reader_id = ? AND a.answer_id IS NULL ORDER BY s.position LIMIT 1", (reader_id,)).fetchone()
    return Progress(done, total, None if row is None else int(row[0]))


def record_answer(conn: sqlite3.Connection, reader_id: int, pair_id: int, choice: str,
                  confidence: int | None = None, rt_ms: int | None = None) -> str:
    """Store one answer in its own transaction; returns what happened.

    "recorded": stored and committed (durable when this returns).
    "duplicate": this reader already answered this pair with the same choice (a retry): nothing changes.
    "changed": already answered with another choice: refused, the first answer stands.
    "not_current": the pair is in the reader's list but is not the one being shown: refused.
    "unknown_pair": the pair is not in this reader's list: refused.
    """
    if choice not in SIDES:
        raise InputError(f"choice {choice!r}: expected one of {SIDES}")
    conn.execute("BEGIN IMMEDIATE")
    try:
        prev = conn.execute("SELECT choice FROM answers WHERE reader_id = ? AND pair_id = ?", (reader_id, pair_id)).fetchone()
        if prev is not None:
            status = "duplicate" if prev["choice"] == choice else "changed"
        elif conn.execute("SELECT 1 FROM schedule WHERE reader_id = ? AND pair_id = ?", (reader_id, pair_id)).fetchone() is None:
            status = "unknown_pair"
        elif progress(conn, reader_id).next_pair != pair_id:
            status = "not_current"
        else:
            real_side = conn.execute("SELECT real_side FROM pairs WHERE pair_id = ?", (pair_id,)).fetchone()["real_side"]
            conn.execute(
                "INSERT INTO answers (reader_id, pair_id, choice, correct, confidence, rt_ms, answered_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (reader_id, pair_id, choice, int(choice == real_side), confidence, rt_ms,
                 datetime.now(timezone.utc).isoformat(timespec="milliseconds")))
            status = "recorded"
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return status
