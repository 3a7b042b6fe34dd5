"""What ADD fetched and keeps between builds (`downloads/`, one directory per URL; `git/`, one
checkout per repository and commit): marked when a build uses it, sized by `pybuild du`,
removed by `pybuild prune` once unused for as long as the prune asks.

An entry's last use is its ctime: a build bumps it (`mark_used`) before it reads the entry,
without changing the times that reach a layer (a git checkout's root carries the commit's
mtime). A build marks after it took its lease, so an entry it uses has a ctime later than the
oldest live lease, and prune removes only entries older than that, checked again just before
the removal. Temp files made in an entry (a download's `.data.*`) move its ctime too; a
`.checkout-*` of a build that died goes with the next prune.
"""
from __future__ import annotations

import contextlib
import math
import os
import shutil
from dataclasses import dataclass

from builder.cache.root import CacheRoot
from layers.scratch import tree_size


@dataclass(frozen=True)
class Fetched:
    entries: int
    bytes: int


def mark_used(path: str) -> None:
    """Record that a build uses `path` now: its ctime moves, its atime and mtime stay."""
    status = os.stat(path)
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns))


def _entries(cache_dir: str) -> list[str]:
    root = CacheRoot(cache_dir)
    return [os.path.join(directory, name) for directory in (root.downloads, root.git)
            if os.path.isdir(directory) for name in os.listdir(directory)]


def usage(cache_dir: str) -> Fetched:
    entries = _entries(cache_dir)
    return Fetched(len(entries), sum(tree_size(path) for path in entries))


def remove_unused(cache_dir: str, since: float) -> Fetched:
    """Remove the entries no build has used since `since` (a time.time()); what they held."""
    count = size = 0
    for path in _entries(cache_dir):
        if not _unused(path, since):
            continue
        held = tree_size(path)
        if not _unused(path, since):  # a build marked it while it was measured
            continue
        count, size = count + 1, size + held
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    return Fetched(count, size)


def _unused(path: str, since: float) -> bool:
    """Marked in a second before the one `since` falls in: a filesystem that keeps whole
    seconds (ext4 with 128-byte inodes) gives a mark made just after `since` that second."""
    try:
        return os.lstat(path).st_ctime < math.floor(since)
    except FileNotFoundError:  # a prune beside this one removed it
        return False
