"""A read-only merged view of stacked snapshot directories, as overlayfs would show them.

COPY --from and `--chown=name` need to read an image's files; mounting an overlay needs privileges
and a process, while most of these reads touch a handful of paths. This view answers lstat,
listdir and readlink by looking through the snapshots top-down, honouring their deletions,
without mounting anything.

Snapshots hold deletions in one of two forms, a property of the filesystem they live on:
- OVERLAY, overlayfs's own (a whiteout is a char device 0/0, an opaque directory has an
  `overlay.opaque` xattr), so a stack of snapshots is directly an overlay `lowerdir`;
- FILES, the layer tar's own (an empty file `.wh.<name>` hides `name`, a file `.wh..wh..opq`
  makes its directory opaque), for filesystems that cannot hold 0/0 devices or those xattrs: a
  container's overlayfs root, or a user without CAP_MKNOD. No image can have a file named
  `.wh.*` (a layer tar would delete it), so these names are never ambiguous.
"""
from __future__ import annotations

import errno
import os
import stat

from layers.tarwriter import OPAQUE_MARKER, WHITEOUT_PREFIX

OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")
OVERLAY, FILES = "overlay", "files"


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


def make_whiteout(path: str, form: str) -> None:
    """Record the deletion of `path` (which must not exist) in `form`."""
    if form == FILES:
        head, _, name = path.rpartition("/")
        os.close(os.open(f"{head}/{WHITEOUT_PREFIX}{name}",
                         os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
    else:
        os.mknod(path, stat.S_IFCHR, 0)


def make_opaque(path: str, form: str) -> None:
    """Mark directory `path` opaque in `form` (see mark_opaque for OVERLAY)."""
    if form == FILES:
        os.close(os.open(f"{path}/{OPAQUE_MARKER}",
                         os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
    else:
        mark_opaque(path)


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
    """Snapshot directories, lowest first (the order of an image's layers), all in `form`."""

    def __init__(self, lowest_first: list[str], form: str = OVERLAY) -> None:
        self.layers = list(reversed(lowest_first))
        self.form = form
        self._files = form == FILES

    def _whited(self, directory: str, name: str) -> bool:
        """FILES form: whether `directory` of a snapshot holds the whiteout of `name`."""
        return self._files and os.path.lexists(f"{directory}/{WHITEOUT_PREFIX}{name}")

    def _opaque(self, directory: str) -> bool:
        if self._files:
            return os.path.lexists(f"{directory}/{OPAQUE_MARKER}")
        return is_opaque(directory)

    def find(self, rel: str) -> tuple[str, os.stat_result] | None:
        """Host path and lstat of the visible entry at `rel` ("" is the root), or None."""
        parts = [p for p in rel.split("/") if p]
        if self._files and any(p.startswith(WHITEOUT_PREFIX) for p in parts):
            return None
        for layer in self.layers:
            hidden_below = False
            for depth in range(1, len(parts) + 1):
                path = os.path.join(layer, *parts[:depth])
                st = _lstat(path)
                if st is None:
                    if self._whited(os.path.dirname(path), parts[depth - 1]):
                        return None
                    break
                if depth == len(parts):
                    return None if not self._files and is_whiteout(st) else (path, st)
                if not stat.S_ISDIR(st.st_mode):
                    return None
                if self._opaque(path):
                    hidden_below = True
            else:  # the root itself
                st = _lstat(layer)
                if st is not None:
                    return layer, st
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
                if parts and self._whited(os.path.dirname(host), parts[-1]):
                    break
                continue
            if not stat.S_ISDIR(st.st_mode):
                break
            whited: set[str] = set()  # a layer's whiteouts hide lower layers, not its own
            with os.scandir(host) as entries:
                for entry in entries:
                    name = entry.name
                    if self._files and name.startswith(WHITEOUT_PREFIX):
                        if name != OPAQUE_MARKER:
                            whited.add(name[len(WHITEOUT_PREFIX):])
                        continue
                    if name in hidden or name in names:
                        continue
                    if not self._files and is_whiteout(entry.stat(follow_symlinks=False)):
                        whited.add(name)
                    else:
                        names.add(name)
            hidden |= whited
            if self._opaque(host):
                break
        return sorted(names)
