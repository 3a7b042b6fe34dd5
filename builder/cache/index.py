"""The build cache index: SQLite (WAL) under the cache root.

It maps step keys to results (a layer diff ID and the stage state after the step), remembers each
step's inputs (for miss reasons), per-file content digests of build contexts (so an unchanged
context is stat-ed, not read), the manifest digest of a COPY's sources by the signature of their
lstats (so an unchanged context is not even looked up file by file), parsed Dockerfiles, and last
use (for pruning). Several builds may use one cache root at once: SQLite's locking serialises
writers, and a result is recorded only after its blob and snapshot are in place, so a build killed
at any moment leaves an index that only names complete results. Stages built at the same time
use the index from their threads, each through a connection of its own (a connection is no
thread's to share: a transaction of one would take in the statements of another).
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from contextlib import contextmanager
from typing import Iterable, Iterator, NamedTuple

from builder.cache.key import Inputs
from builder.cache.root import CacheRoot

_SCHEMA = """
CREATE TABLE IF NOT EXISTS steps(
    key TEXT PRIMARY KEY, parent TEXT NOT NULL, slot TEXT NOT NULL, inputs TEXT NOT NULL,
    diff_id TEXT, state TEXT NOT NULL, created REAL NOT NULL, last_used REAL NOT NULL);
CREATE TABLE IF NOT EXISTS slots(
    slot TEXT NOT NULL, key TEXT NOT NULL, used REAL NOT NULL, PRIMARY KEY (slot, key));
CREATE TABLE IF NOT EXISTS files(
    path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, ctime_ns INTEGER, ino INTEGER,
    mode INTEGER, digest TEXT);
CREATE TABLE IF NOT EXISTS manifests(digest TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS scans(signature TEXT PRIMARY KEY, manifest TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS parses(key TEXT PRIMARY KEY, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS blobs(
    digest TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, ctime_ns INTEGER, ino INTEGER);
CREATE TABLE IF NOT EXISTS outputs(
    path TEXT PRIMARY KEY, identity TEXT, size INTEGER, mtime_ns INTEGER, ino INTEGER);
CREATE TABLE IF NOT EXISTS leases(pid INTEGER PRIMARY KEY, started REAL NOT NULL);
"""


@dataclass(frozen=True)
class StepRecord:
    key: str
    parent: str
    slot: str
    inputs: Inputs
    diff_id: str | None
    state: dict
    last_used: float


class FileMemo(NamedTuple):
    """What is remembered of a context file. `file_memos` gives plain tuples of these fields, in
    this order (20,000 of them are read by every build of a large context)."""

    size: int
    mtime_ns: int
    ctime_ns: int
    ino: int
    mode: int
    digest: str


class CacheIndex:
    """The index of a cache root, a connection per thread that uses it; holds the build's lease
    while open."""

    def __init__(self, cache_dir: str) -> None:
        os.makedirs(cache_dir, exist_ok=True)
        self._path = CacheRoot(cache_dir).step_index
        # By thread ident, not threading.local: a local's values are released in a forked child
        # (with the other threads' states), and a connection must never be closed there.
        self._connections: dict[int, sqlite3.Connection] = {}
        self._opening = threading.Lock()
        self.db.executescript(_SCHEMA)

    @property
    def db(self) -> sqlite3.Connection:
        """The calling thread's connection, opened on its first use."""
        connection = self._connections.get(threading.get_ident())
        if connection is None:
            connection = sqlite3.connect(self._path, timeout=60, isolation_level=None,
                                         check_same_thread=False)  # closed by `close`
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            with self._opening:
                self._connections[threading.get_ident()] = connection
        return connection

    def close(self) -> None:
        with self._opening:
            for connection in self._connections.values():
                connection.close()
            self._connections.clear()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One transaction (the connection is in autocommit mode, where `with db:` would commit
        every statement on its own: 20,000 file digests took 2 s that way)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- leases: what a running build holds is never pruned -----------------------------------

    def take_lease(self) -> None:
        self.db.execute("INSERT OR REPLACE INTO leases VALUES (?, ?)", (os.getpid(), time.time()))

    def drop_lease(self) -> None:
        self.db.execute("DELETE FROM leases WHERE pid = ?", (os.getpid(),))

    def oldest_live_lease(self) -> float | None:
        oldest = None
        for pid, started in self.db.execute("SELECT pid, started FROM leases").fetchall():
            if _alive(pid):
                oldest = started if oldest is None else min(oldest, started)
            else:
                self.db.execute("DELETE FROM leases WHERE pid = ?", (pid,))
        return oldest

    # -- steps -----------------------------------------------------------------------------

    def lookup(self, key: str) -> StepRecord | None:
        row = self.db.execute("SELECT * FROM steps WHERE key = ?", (key,)).fetchone()
        return _record(row) if row else None

    def touch(self, key: str, slot: str) -> None:
        now = time.time()
        self.db.execute("UPDATE steps SET last_used = ? WHERE key = ?", (now, key))
        self.db.execute("INSERT OR REPLACE INTO slots VALUES (?, ?, ?)", (slot, key, now))

    def latest_in_slot(self, slot: str) -> StepRecord | None:
        """The result most recently used at this place of this Dockerfile (built or reused)."""
        row = self.db.execute("SELECT steps.* FROM slots JOIN steps ON steps.key = slots.key "
                              "WHERE slots.slot = ? ORDER BY slots.used DESC LIMIT 1",
                              (slot,)).fetchone()
        return _record(row) if row else None

    def record(self, key: str, parent: str, slot: str, inputs: Inputs, diff_id: str | None,
               state: dict) -> None:
        now = time.time()
        with self._transaction():
            self.db.execute("INSERT OR REPLACE INTO steps VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (key, parent, slot, json.dumps(list(inputs.items)), diff_id,
                             json.dumps(state, separators=(",", ":")), now, now))
            self.db.execute("INSERT OR REPLACE INTO slots VALUES (?, ?, ?)", (slot, key, now))

    def forget(self, key: str) -> None:
        with self._transaction():
            self.db.execute("DELETE FROM steps WHERE key = ?", (key,))
            self.db.execute("DELETE FROM slots WHERE key = ?", (key,))

    def steps(self) -> list[StepRecord]:
        return [_record(row) for row in self.db.execute("SELECT * FROM steps ORDER BY last_used")]

    # -- per-file digests of build contexts --------------------------------------------------

    def file_memos(self, prefix: str) -> dict[str, tuple]:
        """Every remembered file under `prefix` (which ends with "/"), in one query: host path ->
        the fields of a FileMemo, as a plain tuple. Paths that are not UTF-8 are BLOBs (see
        `remember_files`), which SQLite sorts after every TEXT: a second range finds them."""
        raw = os.fsencode(prefix)
        text = (prefix, prefix + "\uffff") if _is_text(prefix) else ("\uffff", "\uffff")
        rows = self.db.execute("SELECT path, size, mtime_ns, ctime_ns, ino, mode, digest "
                               "FROM files WHERE path >= ? AND path < ? OR path >= ? AND path < ?",
                               (*text, raw, raw[:-1] + bytes([raw[-1] + 1])))
        return {(os.fsdecode(row[0]) if isinstance(row[0], bytes) else row[0]): row[1:]
                for row in rows}

    def remember_files(self, memos: Iterable[tuple[str, tuple]]) -> None:
        """Remember (host path, FileMemo or a tuple of its fields) pairs. A path whose bytes are
        not UTF-8 (Python holds them as lone surrogates, which SQLite's TEXT cannot) is stored
        as a BLOB of those bytes."""
        rows = [(path, *memo) for path, memo in memos]
        if rows:
            with self._transaction():
                try:
                    self.db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?)",
                                        rows)
                except UnicodeEncodeError:
                    self.db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?)",
                                        [(path if _is_text(path) else os.fsencode(path), *rest)
                                         for path, *rest in rows])

    # -- source manifests (what a COPY read), for "src/app.py changed" ---------------------

    def put_manifest(self, digest: str, body: str) -> None:
        """Store a manifest (its rows as JSON text) unless it is stored."""
        self.db.execute("INSERT OR IGNORE INTO manifests VALUES (?, ?)", (digest, body))

    def manifest(self, digest: str) -> list | None:
        row = self.db.execute("SELECT body FROM manifests WHERE digest = ?", (digest,)).fetchone()
        return json.loads(row[0]) if row else None

    # -- scans: what a walk gave (a COPY's sources' manifest digest, the context's provenance
    # digest), by the signature of its lstats --------------------------------------------------

    def scanned(self, signature: str) -> str | None:
        row = self.db.execute("SELECT manifest FROM scans WHERE signature = ?",
                              (signature,)).fetchone()
        return row[0] if row else None

    def remember_scan(self, signature: str, manifest_digest: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO scans VALUES (?, ?)", (signature, manifest_digest))

    # -- parsed Dockerfiles (grammar/stored.py) ----------------------------------------------

    def parsed(self, key: str) -> bytes | None:
        row = self.db.execute("SELECT body FROM parses WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def remember_parse(self, key: str, body: bytes) -> None:
        self.db.execute("INSERT OR REPLACE INTO parses VALUES (?, ?)", (key, body))

    # -- blobs: stat-verified, so a blob changed after it was written is noticed ---------------

    def blob_stat(self, digest: str) -> tuple[int, int, int, int] | None:
        row = self.db.execute("SELECT size, mtime_ns, ctime_ns, ino FROM blobs WHERE digest = ?",
                              (digest,)).fetchone()
        return tuple(row) if row else None

    def remember_blob(self, digest: str, st: os.stat_result) -> None:
        self.db.execute("INSERT OR REPLACE INTO blobs VALUES (?, ?, ?, ?, ?)",
                        (digest, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))

    def forget_blob(self, digest: str) -> None:
        self.db.execute("DELETE FROM blobs WHERE digest = ?", (digest,))


    # -- tarballs written, so an unchanged output is not written again ---------------------------

    def output(self, path: str) -> tuple[str, int, int, int] | None:
        row = self.db.execute("SELECT identity, size, mtime_ns, ino FROM outputs WHERE path = ?",
                              (path,)).fetchone()
        return tuple(row) if row else None

    def remember_output(self, path: str, identity: str, st: os.stat_result) -> None:
        self.db.execute("INSERT OR REPLACE INTO outputs VALUES (?, ?, ?, ?, ?)",
                        (path, identity, st.st_size, st.st_mtime_ns, st.st_ino))


def _record(row) -> StepRecord:
    key, parent, slot, inputs, diff_id, state, _created, last_used = row
    return StepRecord(key, parent, slot, Inputs(tuple(tuple(i) for i in json.loads(inputs))),
                      diff_id, json.loads(state), last_used)


def _is_text(path: str) -> bool:
    """Whether SQLite can hold `path` as TEXT (UTF-8): not a name of bytes that are not UTF-8."""
    try:
        path.encode()
    except UnicodeEncodeError:
        return False
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
