"""Files a build leaves for others to read (the tarball, `--trace`, `--metadata-file`, an exported
cache): written to a temp file beside the target and renamed, so a reader, or a failed build,
never sees half a file. The temp file has no name while it is written (O_TMPFILE), so a build
killed halfway leaves nothing behind: the kernel frees it. Only where the filesystem has no
O_TMPFILE is it a named `.NAME.XXXX` file, removed on error but not after SIGKILL."""
from __future__ import annotations

import errno
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
    directory, name = os.path.split(path)
    anonymous = _anonymous_file(directory)
    if anonymous is not None:
        with os.fdopen(anonymous, "wb") as out:
            yield out
            out.flush()
            os.fchmod(anonymous, 0o644)
            _put(_named(anonymous, directory, name), path)
        return
    fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
        os.chmod(temp, 0o644)
        _put(temp, path)
    except BaseException:
        os.unlink(temp)
        raise


def _anonymous_file(directory: str) -> int | None:
    """A file without a name in `directory`, or None where the filesystem (or /proc, which
    gives it one later) does not allow that."""
    if not os.path.isdir("/proc/self/fd"):
        return None
    try:
        return os.open(directory, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    except OSError as error:
        if error.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            return None
        raise


def _named(descriptor: int, directory: str, name: str) -> str:
    """Give the anonymous file a temp name beside its target (for the rename that replaces the
    target in one step)."""
    proc = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        while True:
            temp = os.path.join(directory, f".{name}.{os.urandom(6).hex()}")
            try:  # a dir fd makes Python call linkat(AT_SYMLINK_FOLLOW), not link(2)
                os.link(f"self/fd/{descriptor}", temp, src_dir_fd=proc, follow_symlinks=True)
                return temp
            except FileExistsError:
                continue
    finally:
        os.close(proc)


def _put(temp: str, path: str) -> None:
    """Move `temp` to `path` in one step. Over an existing file the two are swapped
    (renameat2's RENAME_EXCHANGE) and the old one, now at `temp`, removed: a rename over a file
    makes ext4 flush the new file's delayed allocations there and then (auto_da_alloc), which
    cost a 250 MB tarball ~90 ms of the build on the benchmark machine; a swap does not. Where
    there is nothing to swap with, or the filesystem cannot swap, a plain rename."""
    from builder.sandbox.linux import exchange
    try:
        exchange(temp, path)
    except OSError:
        os.replace(temp, path)
        return
    os.unlink(temp)


def write_atomically(path: str, data: bytes) -> None:
    with replacing(path) as out:
        out.write(data)
