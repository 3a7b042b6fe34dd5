"""The sandbox's own paths in a root changed in place (a materialized image, for the walk diff):
/dev, /proc, /sys and the /etc files are put in place for one RUN and taken out after it, so that
none of them reaches the layer. The chroot strategy can mount nothing, so they are real: device
nodes, copied files; the namespaces strategy mounts over them.

An entry the image has at one of these paths is moved aside meanwhile and put back after; what
the RUN wrote there is dropped, as writes to a tmpfs /dev or a read-only /etc/hosts are. The
times of the directories they sit in are put back as well, unless the RUN itself changed those
directories. The RUN may have replaced a directory with a symlink to anywhere on the host, so
the way back never follows one: everything is done relative to directory descriptors opened
with O_NOFOLLOW.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import stat
from dataclasses import dataclass
from typing import Callable, Iterator

from builder.sandbox import rootfs

# Every path `placed` may move the image's entry away from and back to (a changed ctime there is
# no change of the image: layers/walkdiff.py).
MOVED = ("dev", "proc", "sys", rootfs.HOSTS, rootfs.RESOLV_CONF)
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class _Placed:
    parent: str          # "" (the root) or "etc"
    name: str
    aside: str | None    # the image's own entry, moved to the aside directory under this name


@contextlib.contextmanager
def placed(root: str, scratch: str, etc_files: dict[str, str], devices: bool) -> Iterator[None]:
    """/dev (with the usual device nodes, made with mknod, if `devices`), empty /proc and /sys,
    and `etc_files` ({path in the root: host file}) copied in, for the duration."""
    wanted: list[tuple[str, Callable[[int, str], None]]] = [
        ("dev", _make_dev if devices else _make_dir), ("proc", _make_dir), ("sys", _make_dir)]
    wanted += [(rel, _copier(source)) for rel, source in etc_files.items()]
    aside = os.path.join(scratch, "aside")
    os.mkdir(aside, 0o700)
    root_fd = os.open(root, _DIRECTORY)
    aside_fd = os.open(aside, _DIRECTORY)
    made_etc = False
    placed_entries: list[_Placed] = []
    before: dict[str, tuple[int, int]] = {}
    after: dict[str, int | None] = {}
    try:
        before[""] = _times(root_fd)
        etc = _open(root_fd, "etc")
        if etc is None and not os.path.lexists(os.path.join(root, "etc")):
            os.mkdir("etc", 0o755, dir_fd=root_fd)
            made_etc = True
        elif etc is not None:
            before["etc"] = _times(etc)
            os.close(etc)
        for rel, make in wanted:
            entry = _place(root_fd, aside_fd, rel, make, len(placed_entries))
            if entry is not None:
                placed_entries.append(entry)
        after = {parent: _mtime(root_fd, parent) for parent in before}
        yield
    finally:
        ending = {parent: _times_at(root_fd, parent) for parent in before}
        for entry in reversed(placed_entries):
            _take_out(root_fd, aside_fd, entry)
        if made_etc:
            with contextlib.suppress(OSError):  # kept if the RUN wrote into it
                os.rmdir("etc", dir_fd=root_fd)
        for parent, times in before.items():
            now = ending[parent]
            if now is not None:
                _restore(root_fd, parent, times if now[1] == after.get(parent, now[1]) else now)
        os.close(aside_fd)
        os.close(root_fd)


def _place(root_fd: int, aside_fd: int, rel: str, make: Callable[[int, str], None],
           number: int) -> _Placed | None:
    parent, _, name = rel.rpartition("/")
    directory = _open(root_fd, parent)
    if directory is None:
        return None
    try:
        try:
            st = os.stat(name, dir_fd=directory, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if parent and st is not None and not stat.S_ISREG(st.st_mode):
            return None  # an image's own symlinked resolv.conf stays, as with the namespaces
        moved = None
        if st is not None:
            moved = str(number)
            os.rename(name, moved, src_dir_fd=directory, dst_dir_fd=aside_fd)
        make(directory, name)
        return _Placed(parent, name, moved)
    finally:
        os.close(directory)


def _take_out(root_fd: int, aside_fd: int, entry: _Placed) -> None:
    directory = _open(root_fd, entry.parent)
    if directory is None:
        return  # the RUN replaced the parent: the image's entry went with it
    try:
        try:
            st = os.stat(entry.name, dir_fd=directory, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode):
            shutil.rmtree(entry.name, dir_fd=directory)
        elif st is not None:
            os.unlink(entry.name, dir_fd=directory)
        if entry.aside is not None:
            os.rename(entry.aside, entry.name, src_dir_fd=aside_fd, dst_dir_fd=directory)
    finally:
        os.close(directory)


def _make_dir(directory: int, name: str) -> None:
    os.mkdir(name, 0o755, dir_fd=directory)
    os.chmod(name, 0o755, dir_fd=directory)


def _make_dev(directory: int, name: str) -> None:
    _make_dir(directory, name)
    dev = os.open(name, _DIRECTORY, dir_fd=directory)
    try:
        for node in rootfs.DEVICES:
            os.mknod(node, stat.S_IFCHR | 0o666, os.stat(f"/dev/{node}").st_rdev, dir_fd=dev)
            os.chmod(node, 0o666, dir_fd=dev)
        os.mkdir("pts", 0o755, dir_fd=dev)
        for name in ("shm", "mqueue"):
            os.mkdir(name, dir_fd=dev)
            os.chmod(name, 0o1777, dir_fd=dev)
        for link, target in rootfs.DEV_LINKS:
            os.symlink(target, link, dir_fd=dev)
    finally:
        os.close(dev)


def _copier(source: str) -> Callable[[int, str], None]:
    def copy(directory: int, name: str) -> None:
        with open(source, "rb") as handle:
            content = handle.read()
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644,
                     dir_fd=directory)
        os.fchmod(fd, 0o644)
        with open(fd, "wb") as handle:
            handle.write(content)
    return copy


def _open(root_fd: int, rel: str) -> int | None:
    """A descriptor of directory `rel` ("" is the root), never through a symlink; None if it is
    not a directory."""
    try:
        return os.open(rel or ".", _DIRECTORY, dir_fd=root_fd)
    except OSError:
        return None


def _times(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_atime_ns, st.st_mtime_ns


def _times_at(root_fd: int, rel: str) -> tuple[int, int] | None:
    directory = _open(root_fd, rel)
    if directory is None:
        return None
    try:
        return _times(directory)
    finally:
        os.close(directory)


def _mtime(root_fd: int, rel: str) -> int | None:
    times = _times_at(root_fd, rel)
    return None if times is None else times[1]


def _restore(root_fd: int, rel: str, times: tuple[int, int]) -> None:
    directory = _open(root_fd, rel)
    if directory is not None:
        try:
            os.utime(directory, ns=times)
        finally:
            os.close(directory)
