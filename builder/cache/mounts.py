"""RUN --mount=type=cache directories: `<cache root>/mounts/<hash of id>/` holds the `id`, a
`lock` file and the `data` the RUN sees. They outlive builds, never enter a layer or a step's
cache key, and are shown by `pybuild du` and removed by `pybuild prune`.

Sharing is BuildKit's, across builds and processes, with flock(2) on the `lock` file for as long
as the RUN runs (the kernel drops it however the process dies): `shared` holds a shared lock (any
number of RUNs at once), `locked` an exclusive one (a second RUN waits), and `private` an
exclusive one without waiting: when the cache is busy, the RUN gets a fresh empty directory of
its own, thrown away after it. Prune removes only caches it can lock exclusively. An export
(`--cache-to ...,mounts=true`) reads a cache under a shared lock; an import fills an empty one
under an exclusive lock, before the RUN that uses it runs.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, replace
from typing import Callable, Iterator

from grammar.mounts import CacheMount
from builder.cache.root import CacheRoot
from layers.scratch import tree_size


@dataclass(frozen=True)
class CacheDir:
    id: str
    path: str
    size: int


def _base(cache_dir: str, ident: str) -> str:
    return os.path.join(CacheRoot(cache_dir).mounts, hashlib.sha256(ident.encode()).hexdigest()[:32])


@contextlib.contextmanager
def held(cache_dir: str, mount: CacheMount, scratch: str,
         seed: Callable[[str], None] | None = None) -> Iterator[str]:
    """The data directory of the cache `mount.id`, locked as its sharing says for the duration;
    made (owned `uid`:`gid`, mode `mode`, filled by `seed` when given) on first use."""
    base = _base(cache_dir, mount.id)
    os.makedirs(base, 0o700, exist_ok=True)
    if not os.path.exists(os.path.join(base, "id")):
        # a name of this thread's own: two stages (or builds) may make the same cache at once
        written = os.path.join(base, f"id.{os.getpid()}.{threading.get_ident()}")
        with open(written, "w") as handle:
            handle.write(mount.id)
        os.replace(written, os.path.join(base, "id"))
    lock = os.open(os.path.join(base, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        data = os.path.join(base, "data")
        if mount.sharing == "shared":
            fcntl.flock(lock, fcntl.LOCK_SH)
        elif mount.sharing == "locked":
            fcntl.flock(lock, fcntl.LOCK_EX)
        else:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                data = _made(tempfile.mkdtemp(dir=scratch, prefix="private-cache-"), mount, seed)
        if not os.path.isdir(data):
            fresh = tempfile.mkdtemp(dir=base, prefix="new-")
            try:
                _made(fresh, mount, seed)
            except BaseException:
                shutil.rmtree(fresh, ignore_errors=True)
                raise
            try:
                os.rename(fresh, data)
            except OSError:  # another build made it meanwhile
                shutil.rmtree(fresh, ignore_errors=True)
        yield data
    finally:
        os.close(lock)


def _made(directory: str, mount: CacheMount, seed: Callable[[str], None] | None) -> str:
    """A new cache's empty directory as the mount says, or as `seed` fills it."""
    os.chown(directory, mount.uid, mount.gid)
    os.chmod(directory, mount.mode)
    if seed is not None:
        seed(directory)
    return directory


def listed(cache_dir: str) -> list[CacheDir]:
    """Every cache mount directory, with its id and size."""
    root = CacheRoot(cache_dir).mounts
    found = []
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        base = os.path.join(root, name)
        try:
            with open(os.path.join(base, "id")) as handle:
                ident = handle.read()
        except OSError:
            ident = "?"
        found.append(CacheDir(ident, base, tree_size(base)))
    return found


def remove_all(cache_dir: str) -> tuple[int, int]:
    """Remove every cache mount no RUN is using; returns (removed, bytes freed)."""
    removed = freed = 0
    for cache in listed(cache_dir):
        try:
            lock = os.open(os.path.join(cache.path, "lock"), os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            lock = None
        try:
            if lock is not None:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock)
            continue
        try:
            # Renamed away first: a build that comes after sees no half-removed cache.
            gone = cache.path + ".removing"
            os.rename(cache.path, gone)
            shutil.rmtree(gone, ignore_errors=True)
        finally:
            if lock is not None:
                os.close(lock)
        removed += 1
        freed += cache.size
    return removed, freed


@contextlib.contextmanager
def reading(cache_dir: str, ident: str) -> Iterator[str | None]:
    """The data directory of the cache `ident` under a shared lock (no `locked` RUN writes it
    meanwhile), or None when it is missing or empty."""
    base = _base(cache_dir, ident)
    try:
        lock = os.open(os.path.join(base, "lock"), os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        yield None
        return
    try:
        fcntl.flock(lock, fcntl.LOCK_SH)
        data = os.path.join(base, "data")
        yield data if os.path.isdir(data) and os.listdir(data) else None
    finally:
        os.close(lock)


def fill_if_empty(cache_dir: str, mount: CacheMount, fill: Callable[[str], None],
                  scratch: str) -> None:
    """Let `fill` fill the data directory of the cache `mount.id` (made as the mount says when
    missing) if it is empty: how `--cache-from` restores an exported cache before a RUN that uses
    it runs (builder/cache/mountblobs.py). Under an exclusive lock, so no RUN sees it half
    filled; a cache with files is left as it is, never merged into."""
    with held(cache_dir, replace(mount, sharing="locked"), scratch) as data:
        if not os.listdir(data):
            fill(data)
