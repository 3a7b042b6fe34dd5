"""A layer from an overlay upper directory: the upper dir *is* the change set.

After a RUN, everything it changed is in the upper dir, in overlayfs's own format: new and
copied-up entries as themselves, deletions as 0/0 character devices, deleted-and-recreated
directories marked opaque by an xattr (or, in the FILES form of layers/union.py, `.wh.` files
standing where overlayfs would put its marks: the same layer comes out). Translating that to an OCI layer costs time in proportion to
what changed, whatever the size of the image below (DESIGN.md principle 3).
"""
from __future__ import annotations

import os
import stat
from typing import Iterator

from layers.byteorder import sorted_entries
from layers.tarwriter import Entry, Kind, LayerWriter, entry_from_stat, read_xattrs
from layers.tarwriter import OPAQUE_MARKER, WHITEOUT_PREFIX
from layers.union import FILES, UnionView, is_opaque, is_whiteout


def write_upper(upper: str, writer: LayerWriter, lower: UnionView) -> None:
    """Write the layer for `upper` over `lower` (the image before the change). Whiteouts are
    written only for paths the lower layers have (overlayfs may leave others behind); sockets
    are skipped, as in every Docker layer."""
    first_path: dict[tuple[int, int], str] = {}
    files = lower.form == FILES
    for rel, host, st, whiteout in _walk(upper, "", files):
        if whiteout:
            if lower.find(rel) is not None:
                writer.add_whiteout(rel)
            continue
        if stat.S_ISSOCK(st.st_mode):
            continue
        if stat.S_ISDIR(st.st_mode):
            writer.add(entry_from_stat(rel, st, xattrs=read_xattrs(host)))
            opaque = os.path.lexists(f"{host}/{OPAQUE_MARKER}") if files else is_opaque(host)
            if opaque and lower.find(rel) is not None:
                writer.add_opaque(rel)
            continue
        if stat.S_ISLNK(st.st_mode):
            writer.add(entry_from_stat(rel, st, linkname=os.readlink(host)))
            continue
        entry = entry_from_stat(rel, st, xattrs=read_xattrs(host))
        if entry.kind is Kind.FILE and st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            if key in first_path:
                writer.add(Entry(rel, Kind.HARDLINK, entry.mode, entry.uid, entry.gid, entry.mtime,
                                 0, first_path[key], xattrs=entry.xattrs))
                continue
            first_path[key] = rel
        writer.add(entry, host if entry.kind is Kind.FILE else None)


def _walk(root: str, rel: str, files: bool) -> Iterator[tuple[str, str, os.stat_result, bool]]:
    """(rel, host path, lstat, whether a whiteout) below `root`/`rel`, names in byte order,
    parents first; a FILES whiteout `.wh.name` comes as `name`, where a 0/0 device would be."""
    directory = os.path.join(root, rel) if rel else root
    with os.scandir(directory) as it:
        entries = [(item.name, item) for item in it if not (files and item.name == OPAQUE_MARKER)]
    if files:
        entries = [(name[len(WHITEOUT_PREFIX):], item) if name.startswith(WHITEOUT_PREFIX)
                   else (name, item) for name, item in entries]
    for item in sorted_entries(_Named(name, entry) for name, entry in entries):
        child = f"{rel}/{item.name}" if rel else item.name
        st = item.entry.stat(follow_symlinks=False)
        whiteout = item.name != item.entry.name if files else is_whiteout(st)
        yield child, item.entry.path, st, whiteout
        if stat.S_ISDIR(st.st_mode):
            yield from _walk(root, child, files)


class _Named:
    """A directory entry under the name it stands for (sorted_entries sorts by `.name`)."""

    __slots__ = ("name", "entry")

    def __init__(self, name: str, entry: os.DirEntry[str]) -> None:
        self.name, self.entry = name, entry
