"""Files a build leaves for others to read (the tarball, `--trace`, `--metadata-file`): written to
a temp name beside the target and renamed, so a reader, or a failed build, never sees half a
file."""
from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO


@contextmanager
def replacing(path: str) -> Iterator[BinaryIO]:
    """A file for `path`'s new content, which becomes `path` when the block ends without error
    (and is removed when it raises). A symlink is followed; a path that is not a regular file
    (`-o /dev/null`, a FIFO) is written to as it is, never replaced."""
    path = os.path.realpath(path)
    try:
        special = not stat.S_ISREG(os.stat(path).st_mode)
    except FileNotFoundError:
        special = False
    if special:
        with open(path, "wb") as out:
            yield out
        return
    directory = os.path.dirname(path)
    fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.")
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise


def write_atomically(path: str, data: bytes) -> None:
    with replacing(path) as out:
        out.write(data)
