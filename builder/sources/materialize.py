"""A part of a stage's or an image's filesystem as one plain directory (or file) on the host.

Their files live in a union of snapshot directories (layers/union.py), which a bind mount cannot
take as it is: RUN --mount=type=bind,from=STAGE binds the part written here, and a cache mount
with from= starts with it. Files a read-only mount binds are hardlinked from the snapshots (the
mount keeps them from being written); anything else is copied, with owners, modes, times and
extended attributes.
"""
from __future__ import annotations

import os
import shutil
import stat

from builder.sources.tree import Found, Tree
from layers.walkdiff import copy_attributes


def materialize(tree: Tree, top: Found | None, target: str, *, link: bool) -> None:
    """Write `top` of `tree` (a file, or a directory with everything below it; None: an empty
    tree's root) at `target`, which does not exist yet. With `link`, regular files are hardlinked
    where the filesystem allows."""
    if top is None:
        os.mkdir(target, 0o755)
        return
    directories: list[tuple[str, str, os.stat_result]] = []
    _place(top.host, target, top.st, link, directories)
    if stat.S_ISDIR(top.st.st_mode):
        prefix = len(top.rel) + 1 if top.rel else 0
        for entry in tree.walk(top.rel):
            _place(entry.host, os.path.join(target, entry.rel[prefix:]), entry.st, link,
                   directories)
    for host, path, st in reversed(directories):  # children first: their making moved the times
        copy_attributes(host, path, st)


def _place(host: str, target: str, st: os.stat_result, link: bool,
           directories: list[tuple[str, str, os.stat_result]]) -> None:
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        os.mkdir(target, 0o700)
        directories.append((host, target, st))
        return
    if stat.S_ISREG(mode):
        if link:
            try:
                os.link(host, target)
                return
            except OSError:  # another filesystem, or links refused: a copy
                pass
        shutil.copyfile(host, target, follow_symlinks=False)
    elif stat.S_ISLNK(mode):
        os.symlink(os.readlink(host), target)
    elif stat.S_ISSOCK(mode):
        return  # a socket is nothing without its server
    else:
        os.mknod(target, mode, st.st_rdev)
    copy_attributes(host, target, st)
