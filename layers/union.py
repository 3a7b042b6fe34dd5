"""A read-only merged view of stacked snapshot directories, as overlayfs would show them.

COPY --from and `--chown=name` need to read an image's files; mounting an overlay needs privileges
and a process, while most of these reads touch a handful of paths. This view answers lstat,
listdir and readlink by looking through the snapshots top-down, honouring overlay whiteouts
(char device 0/0) and opaque directories (an xattr), without mounting anything.
"""
from __future__ import annotations

import errno
import os
import stat

OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")


def is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def mark_opaque(path: str) -> None:
    """Mark a directory of an upper dir or snapshot opaque as this process's overlay mounts will
    read it: `trusted.overlay.opaque` needs CAP_SYS_ADMIN (real root); in a user namespace, or
    in a container without that capability, the `user.` name is the one overlayfs mounted with
    `userxattr` reads (and UnionView reads both)."""
    try:
        os.setxattr(path, OPAQUE_XATTRS[0], b"y", follow_symlinks=False)
    except PermissionError:
        os.setxattr(path, OPAQUE_XATTRS[1], b"y", follow_symlinks=False)


def is_opaque(path: str) -> bool:
    for name in OPAQUE_XATTRS:
        try:
            if os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
        except OSError as error:
            if error.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EPERM):
                raise
    return False


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


class UnionView:
    """Snapshot directories, lowest first (the order of an image's layers)."""

    def __init__(self, lowest_first: list[str]) -> None:
        self.layers = list(reversed(lowest_first))

    def find(self, rel: str) -> tuple[str, os.stat_result] | None:
        """Host path and lstat of the visible entry at `rel` ("" is the root), or None."""
        parts = [p for p in rel.split("/") if p]
        for layer in self.layers:
            hidden_below = False
            for depth in range(1, len(parts)):
                ancestor = os.path.join(layer, *parts[:depth])
                st = _lstat(ancestor)
                if st is None:
                    break
                if not stat.S_ISDIR(st.st_mode):
                    return None
                if is_opaque(ancestor):
                    hidden_below = True
            host = os.path.join(layer, *parts)
            st = _lstat(host)
            if st is not None:
                return None if is_whiteout(st) else (host, st)
            if hidden_below:
                return None
        return None

    def listdir(self, rel: str) -> list[str]:
        """Visible names in directory `rel`, sorted."""
        names: set[str] = set()
        hidden: set[str] = set()
        parts = [p for p in rel.split("/") if p]
        for layer in self.layers:
            host = os.path.join(layer, *parts)
            st = _lstat(host)
            if st is None:
                continue
            if not stat.S_ISDIR(st.st_mode):
                break
            with os.scandir(host) as entries:
                for entry in entries:
                    if entry.name in hidden or entry.name in names:
                        continue
                    if is_whiteout(entry.stat(follow_symlinks=False)):
                        hidden.add(entry.name)
                    else:
                        names.add(entry.name)
            if is_opaque(host):
                break
        return sorted(names)
