"""`-o type=local,dest=DIR`: the image's root filesystem written into a directory, the way a
release binary leaves a `FROM scratch` stage.

The layers are applied with layers/unpack.py, which takes hostile layers (nothing is written
outside the root, a symlink is never followed out of it), into a temp directory beside DIR; only
a complete tree is moved into place, so a failed build leaves DIR as it was. As root, owners and
device nodes are kept; otherwise every file belongs to the user running pybuild, and device
nodes are skipped with a warning (fifos are made).

DIR missing or empty: the tree becomes DIR in one rename. DIR with content: each top-level
entry of the tree replaces the one of that name (the old one is moved aside first, then
removed), and names the image does not have are left alone, as buildx leaves them.
"""
from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Sequence

from layers.unpack import apply_layer, remove_tree


def write_local(dest: str, layers: Sequence[str], mtime: int | None = None) -> list[str]:
    """Write the root filesystem the layer tars at `layers` (lowest first, uncompressed) make
    into `dest`; returns warnings (what could not be written as the image has it). `mtime`, if
    given (SOURCE_DATE_EPOCH), is every file's mtime, as BuildKit's local exporter sets it."""
    dest = os.path.realpath(dest)
    parent, name = os.path.split(dest)
    os.makedirs(parent, exist_ok=True)
    temp = tempfile.mkdtemp(dir=parent, prefix=f".{name}.")
    try:
        warnings: list[str] = []
        for blob in layers:
            with open(blob, "rb") as stream:
                warnings += apply_layer(stream, temp)
        if mtime is not None:
            _set_mtimes(temp, mtime)
        os.chmod(temp, 0o755)
        _place(temp, dest)
    except BaseException:
        remove_tree(temp)
        raise
    return warnings


def _set_mtimes(root: str, mtime: int) -> None:
    """Every entry's mtime, children before their directory; symlinks themselves, never what
    they point at."""
    for directory, dirs, files in os.walk(root, topdown=False):
        for name in files + dirs:
            os.utime(os.path.join(directory, name), (mtime, mtime), follow_symlinks=False)
    os.utime(root, (mtime, mtime))


def _place(tree: str, dest: str) -> None:
    try:
        os.rename(tree, dest)  # dest missing, or an empty directory
        return
    except OSError as error:
        if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
    parent, name = os.path.split(dest)
    old = tempfile.mkdtemp(dir=parent, prefix=f".{name}.old.")
    try:
        for entry in sorted(os.listdir(tree)):
            target = os.path.join(dest, entry)
            if os.path.lexists(target):
                os.rename(target, os.path.join(old, entry))
            os.rename(os.path.join(tree, entry), target)
    finally:
        remove_tree(old)
    os.rmdir(tree)
