"""Temporary space under a cache root that cannot outlive its process unnoticed.

Every process that writes temp files under a cache root (a RUN's upper dir, a snapshot or blob
being written, an ADD archive) writes them in a directory of its own, `tmp/<pid>-<random>`, which
it holds an flock on for as long as it lives. The kernel drops that lock when the process dies,
however it dies (SIGKILL included), so a directory whose lock can be taken belongs to no live
process: a later build or `pybuild prune` removes it, and a live build's directory is never
touched (no pid file, so no reused pid to mistake for a live build).

A directory being made is named `.new-*` until it is locked, then renamed; a dead one is renamed
to `.gone-*` under its lock before it is deleted, so a deletion interrupted halfway is resumed.
"""
from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass

_NEW, _GONE = ".new-", ".gone-"
_NEW_GRACE_SECONDS = 60  # a `.new-` directory is locked and renamed microseconds after mkdir
_OWN: dict[str, tuple[str, int]] = {}  # cache root -> (our directory, its locked descriptor)
_MAKING = threading.Lock()


@dataclass(frozen=True)
class Leftovers:
    """Temp directories of dead processes: how many, and their size."""

    count: int
    size: int


def private_dir(root: str) -> str:
    """This process's temp directory under `root`, made and locked on first use and removed
    when the process exits. It is on the cache's filesystem, so its files can be renamed into
    the stores."""
    key = os.path.abspath(root)
    with _MAKING:
        return _OWN[key][0] if key in _OWN and os.path.isdir(_OWN[key][0]) else _make(key)


def _make(key: str) -> str:
    """Make, lock and name the directory (under `.new-` until locked, so no sweep takes it)."""
    if key in _OWN:  # the cache was removed under us
        os.close(_OWN.pop(key)[1])
    parent = os.path.join(key, "tmp")
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(dir=parent, prefix=_NEW)
    descriptor = _open(staging)
    fcntl.flock(descriptor, fcntl.LOCK_EX)
    final = os.path.join(parent, f"{os.getpid()}-{os.path.basename(staging)[len(_NEW):]}")
    os.rename(staging, final)
    if not _OWN:
        atexit.register(_release_all, os.getpid())
    _OWN[key] = (final, descriptor)
    return final


def _release_all(owner: int) -> None:
    if os.getpid() != owner:  # a forked child that ran atexit handlers owns nothing here
        return
    for path, descriptor in _OWN.values():
        try:
            os.rmdir(path)  # what a build leaves when every step cleaned up after itself
        except OSError:
            shutil.rmtree(path, ignore_errors=True)
        os.close(descriptor)
    _OWN.clear()


def sweep(root: str, background: bool = False) -> Leftovers:
    """Remove the temp directories of dead processes under `root`. In the background (one
    `rm -rf` in a session of its own, holding their locks, so a concurrent sweep leaves them
    alone and one that comes after an interrupted `rm` resumes it), the size is not measured."""
    doomed: list[tuple[str, int]] = []
    try:
        for path, descriptor in _dead(root):
            doomed.append((path, descriptor))
            name = os.path.basename(path)
            if not name.startswith(_GONE):
                gone = os.path.join(os.path.dirname(path), _GONE + name)
                try:
                    os.rename(path, gone)
                except OSError:  # another sweep removed it between our open and lock
                    doomed.pop()
                    os.close(descriptor)
                    continue
                doomed[-1] = (gone, descriptor)
        if doomed and background and _remove_in_background(doomed):
            return Leftovers(len(doomed), 0)
        size = 0
        for path, _ in doomed:
            size += tree_size(path)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        return Leftovers(len(doomed), size)
    finally:
        for _, descriptor in doomed:
            os.close(descriptor)


def leftovers(root: str) -> Leftovers:
    """What the temp directories of dead processes hold (for `pybuild du`)."""
    count = size = 0
    for path, descriptor in _dead(root):
        os.close(descriptor)
        count += 1
        size += tree_size(path)
    return Leftovers(count, size)


def _dead(root: str):
    """(path, descriptor holding its lock) for each temp entry of `root` no live process holds;
    the caller closes the descriptor."""
    parent = os.path.join(os.path.abspath(root), "tmp")
    own = _OWN.get(os.path.abspath(root), ("", -1))[0]
    try:
        entries = list(os.scandir(parent))
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.path == own:
            continue
        if entry.name.startswith(_NEW):
            try:
                young = os.lstat(entry.path).st_mtime > time.time() - _NEW_GRACE_SECONDS
            except FileNotFoundError:
                continue
            if young:
                continue
        try:
            descriptor = _open(entry.path)
        except OSError:
            continue
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # a live process holds it (or locks do not work here: leave it)
            os.close(descriptor)
            continue
        yield entry.path, descriptor


def _open(path: str) -> int:
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)


def _remove_in_background(doomed: list[tuple[str, int]]) -> bool:
    """`rm -rf` of the paths, left running after we return (and after we exit), holding their
    locks through inherited copies of the descriptors. False when rm cannot be started."""
    import subprocess
    try:
        subprocess.Popen(["rm", "-rf", "--", *(path for path, _ in doomed)],
                         pass_fds=tuple(descriptor for _, descriptor in doomed),
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError:
        return False
    return True


def tree_size(path: str) -> int:
    """Bytes of the files under `path` (or of `path` itself, a file)."""
    try:
        if not os.path.isdir(path) or os.path.islink(path):
            return os.lstat(path).st_size
    except OSError:
        return 0
    total = 0
    for directory, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_size
            except OSError:
                pass
    return total
