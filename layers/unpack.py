"""Apply a layer tar to a directory, as `docker load` or an overlay mount would see it, safely.

The tar may be hostile (a base image, an ADD archive), so no entry may write outside `root`: names
are cleaned lexically (a leading `/` is dropped, a `..` that climbs out is refused), every parent
directory is resolved as if `root` were `/` (a symlink is followed only inside the root, never out
of it), the final component is never followed, and a hardlink may only point at something already
inside the root. `root` must not be changed by anyone else meanwhile.

Whiteouts are either applied ("apply": `.wh.name` deletes the lower `name`, `.wh..wh..opq` empties
the directory of lower content) or stored the way overlayfs reads a layer directory ("overlay": a
0/0 character device, and an opaque xattr: `trusted.overlay.opaque`, or `user.overlay.opaque` for
an unprivileged mount, whichever this process may set unless told), or kept as the files the tar
has ("files", for filesystems that can hold neither; layers/union.py reads both forms).
"""
from __future__ import annotations

import errno
import os
import posixpath
import queue
import shutil
import stat
import threading
from collections.abc import Callable
from typing import BinaryIO, Literal, TypeVar

from layers.errors import LayerError
from layers.tarreader import TarEntry, TarReader
from layers.tarwriter import OPAQUE_MARKER, WHITEOUT_PREFIX
from layers.union import FILES, make_opaque, make_whiteout, mark_opaque

_MAX_SYMLINKS = 40  # per entry, as the kernel's MAXSYMLINKS
_OVERLAY_XATTRS = ("trusted.overlay.", "user.overlay.")
# How often (in entries) apply_layer tells its `progress` how far it got.
PROGRESS_EVERY = 512
# Regular files up to this size, in a fresh root, are written by worker threads (creating an inode
# is most of an unpack's cost, in the kernel, without the GIL); this many to a batch.
_HANDED_OFF = 256 << 10
_BATCH = 64
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# What a hostile header can provoke from os calls: NUL in a link target, an mtime, id or device
# number beyond what the kernel takes, besides plain OS errors.
_BAD_VALUE = (OSError, ValueError, OverflowError)
T = TypeVar("T")


def apply_layer(tar_stream: BinaryIO, root: str, *,
                whiteouts: Literal["apply", "overlay", "files"] = "apply",
                opaque_xattr: str | None = None,
                progress: Callable[[int, int], None] | None = None,
                devices: bool = True) -> list[str]:
    """Apply the uncompressed layer tar `tar_stream` (wrap it in `decompressing_reader` first if
    need be) to the existing directory `root`. Returns warnings about what could not be applied
    (device nodes and ownership when not root, xattrs the kernel refused). Raises LayerError naming
    the entry for input that is refused; `root` is then half-applied and must be discarded.

    A non-directory entry replaces whatever is at its path; a directory entry over a directory only
    updates its attributes. Ownership is set when running as root; modes, mtimes and directory
    attributes last, deepest first, so a 0555 directory can still be filled.

    `progress(entries, bytes)`, if given, hears how far the stream has been read, every
    PROGRESS_EVERY entries and at the end. Without `devices`, device nodes are skipped with a
    warning (a directory that is not an image's root never needs one)."""
    if whiteouts not in ("apply", "overlay", "files"):
        raise ValueError(f"whiteouts must be 'apply', 'overlay' or 'files', not {whiteouts!r}")
    applier = _Applier(root, None if whiteouts == "apply" else whiteouts, opaque_xattr, devices)
    reader = TarReader(tar_stream)
    count = 0
    try:
        for count, member in enumerate(reader, 1):
            applier.apply(member, reader)
            if progress is not None and not count % PROGRESS_EVERY:
                progress(count, reader.consumed)
        applier.finish()
    except EOFError as e:  # a truncated compressed stream
        raise LayerError(f"not a valid layer tar: {e}") from e
    finally:
        applier.close()  # no worker may still write once the caller removes a failed root
    if progress is not None:
        progress(count, reader.consumed)
    return applier.warnings


def clean_name(name: str, entry: str) -> str:
    """`name` relative to the root, "" for the root itself: leading slashes dropped (as GNU tar
    does), `.` and doubled slashes removed. A name that climbs out with `..` is hostile: refused."""
    if "\0" in name:
        raise LayerError(f"{entry!r}: NUL in a path")
    if not ("//" in name or "." in name.partition("/")[0][:1] or "/." in name
            or name.startswith("/") or name.endswith("/")):
        return name  # already clean: most names of most layers
    cleaned = posixpath.normpath(name.lstrip("/"))
    if cleaned == ".." or cleaned.startswith("../"):
        raise LayerError(f"{entry}: path leads outside the root")
    return "" if cleaned == "." else cleaned


class _Applier:
    """The state of one application: resolved directories, what this layer wrote (whiteouts and
    opaque markers only hide lower content), and directory attributes still to set."""

    def __init__(self, root: str, form: str | None, opaque_xattr: str | None,
                 devices: bool = True) -> None:
        self.root = os.path.realpath(root)
        if self.root == "/" or not os.path.isdir(self.root):
            raise LayerError(f"{root}: not a directory a layer can be applied to")
        self.form = form  # how whiteouts are kept; None: applied
        self.overlay = form is not None
        self.opaque_xattr = opaque_xattr
        self.privileged = os.geteuid() == 0
        self.devices = devices
        self.chown = self.privileged
        self.umask = _umask()
        self.warnings: list[str] = []
        self._dirs = {"": self.root}       # clean relative dir -> real host path
        self._written: set[str] = set()    # host paths this layer created or updated
        self._whited: set[str] = set()     # host paths of whiteout devices made by this layer
        self._dir_attrs: dict[str, TarEntry] = {}
        self._restore: dict[str, int] = {}  # dirs opened up to write into them (unprivileged)
        self._symlinks_left = _MAX_SYMLINKS
        self._made: set[str] = set()  # directories made as parents of entries
        self._owner = threading.get_ident()
        fresh = not os.listdir(self.root)
        # What a new inode's owner already is, so an entry of that owner needs no chown: 0:0 for
        # root in a fresh root without setgid (no directory gets its own mode before `finish`).
        self._born_owner = (0, 0) if (fresh and self.privileged and os.getegid() == 0 and not
                                      os.stat(self.root).st_mode & stat.S_ISGID) else None
        workers = min(os.cpu_count() or 1, 4)
        self._writers = _Writers(self, workers) if workers > 1 and fresh else None

    def close(self) -> None:
        if self._writers is not None:
            self._writers.close()

    def _settle(self) -> None:
        """Wait for the files handed to workers: before anything that removes, replaces or
        reads what is in the root (a later entry must never find an earlier one half-made)."""
        if self._writers is not None:
            self._writers.wait()

    def apply(self, member: TarEntry, reader: TarReader) -> None:
        name = clean_name(member.name, member.name)
        if not name:
            return  # the root's own attributes belong to the snapshot, not the layer (containerd)
        self._symlinks_left = _MAX_SYMLINKS
        parent_rel, _, base = name.rpartition("/")
        try:
            if base.startswith(WHITEOUT_PREFIX):
                self._whiteout(parent_rel, base, member)
                return
            parent = self._dirs.get(parent_rel) or self._real_dir(parent_rel, member.name,
                                                                   create=True)
            path = f"{parent}/{base}"
            again = path in self._written
            if again:
                self._settle()
            kind = member.kind
            if kind == b"0":
                if (self._writers is not None and member.size <= _HANDED_OFF and not again
                        and path not in self._made):
                    self._writers.add(parent, path, member, reader.body())
                else:
                    self._file(path, member, reader)
            elif kind == b"5":
                self._directory(path, member)
                self._dirs[name] = path  # its children need no lookup, nor wait for workers
            elif kind == b"2":
                self._create(path, lambda p: os.symlink(member.linkname, p))
                self._attributes(path, member, chmod=False, new=True)
            elif kind == b"1":
                target = self._link_target(member)
                self._create(path, lambda p: os.link(target, p, follow_symlinks=False))
                self._attributes(path, member, chmod=not os.path.islink(path))
            elif kind in (b"3", b"4", b"6"):
                self._special(path, member)
            else:
                self.warnings.append(f"{member.name}: skipped entry of tar type "
                                     f"{kind.decode('latin-1')!r}")
                return
            self._written.add(path)
        except _BAD_VALUE as e:
            raise LayerError(f"{member.name}: {_reason(e)}") from e

    def finish(self) -> None:
        """Set the modes and mtimes of directories, deepest first, now that they are filled."""
        self._settle()
        for path, mode in self._restore.items():
            if path not in self._dir_attrs and _is_dir(path):
                os.chmod(path, mode)
        for path in sorted(self._dir_attrs, key=lambda p: p.count("/"), reverse=True):
            if _is_dir(path):  # else removed or replaced later in the layer
                member = self._dir_attrs[path]
                try:
                    os.chmod(path, member.mode & 0o7777)
                    os.utime(path, ns=(member.mtime_ns, member.mtime_ns), follow_symlinks=False)
                except _BAD_VALUE as e:
                    raise LayerError(f"{member.name}: {_reason(e)}") from e

    # -- entries ---------------------------------------------------------------------------------

    def _directory(self, path: str, member: TarEntry) -> None:
        try:
            os.mkdir(path, 0o700)  # its own mode is set last, once its children are in
            new = True
        except FileExistsError:
            existing = os.lstat(path)
            new = not stat.S_ISDIR(existing.st_mode)
            if new:
                self._remove(path, existing)
                os.mkdir(path, 0o700)
            else:
                self._open_up(path, existing)
        if path in self._whited:
            # rm -rf d && mkdir d in one layer: in overlay the new d must hide the lower one
            self._mark_opaque(path)
        self._attributes(path, member, chmod=False, times=False, new=new)
        self._dir_attrs[path] = member

    def _file(self, path: str, member: TarEntry, reader: TarReader | bytes) -> None:
        """Created with its mode (the umask permitting), so most files need no chmod; a chown
        clears setuid and setgid bits, which are therefore set after it. The body comes from the
        reader or, in a worker, as bytes (and then nothing can be in the way)."""
        mode = member.mode & 0o7777
        try:
            fd = os.open(path, _NEW_FILE, mode & 0o777)
        except FileExistsError:
            if threading.get_ident() != self._owner:  # a worker's path is new, or this is a bug
                raise
            self._remove(path, os.lstat(path))
            fd = os.open(path, _NEW_FILE, mode & 0o777)
        try:
            if isinstance(reader, bytes):
                done = 0
                while done < len(reader):
                    done += os.write(fd, reader[done:])
            else:
                reader.write_body(fd)
            self._attributes(fd, member, chmod=bool(mode & 0o7000 or mode & self.umask),
                             new=True)
        finally:
            os.close(fd)

    def _special(self, path: str, member: TarEntry) -> None:
        if member.kind == b"6":
            self._create(path, lambda p: os.mkfifo(p, 0o600))
        else:
            if not self.devices:
                self.warnings.append(f"{member.name}: device node skipped (not allowed here)")
                return
            if not self.privileged:
                self.warnings.append(f"{member.name}: device node skipped (needs root)")
                return
            kind = stat.S_IFCHR if member.kind == b"3" else stat.S_IFBLK
            device = os.makedev(member.devmajor, member.devminor)
            try:
                self._create(path, lambda p: os.mknod(p, kind | 0o600, device))
            except PermissionError:
                self.warnings.append(f"{member.name}: device node skipped (not permitted here)")
                return
        self._attributes(path, member)

    def _link_target(self, member: TarEntry) -> str:
        """The host path a hardlink entry links to: something already inside the root, found with
        the same resolution as entry names, never a directory."""
        self._settle()
        target_rel = clean_name(member.linkname, member.name)
        head, _, base = target_rel.rpartition("/")
        parent = self._real_dir(head, member.name, create=False) if base else None
        target = f"{parent}/{base}" if parent else None
        if target is None or not os.path.lexists(target):
            raise LayerError(f"{member.name}: hardlink target {member.linkname!r} "
                             "is not in the root")
        if os.path.isdir(target) and not os.path.islink(target):
            raise LayerError(f"{member.name}: hardlink to a directory {member.linkname!r}")
        return target

    # -- whiteouts -------------------------------------------------------------------------------

    def _whiteout(self, parent_rel: str, base: str, member: TarEntry) -> None:
        if base == OPAQUE_MARKER:
            self._opaque(parent_rel, member)
            return
        hidden = base[len(WHITEOUT_PREFIX):]
        if hidden.startswith(WHITEOUT_PREFIX):
            self.warnings.append(f"{member.name}: skipped AUFS metadata")
            return
        if hidden in ("", ".", ".."):
            raise LayerError(f"{member.name}: whiteout without a name")
        parent = self._real_dir(parent_rel, member.name, create=self.overlay)
        if parent is None:
            return  # nothing below to hide
        path = f"{parent}/{hidden}"
        if path in self._written:
            return  # whiteouts hide lower layers only, not this layer's own entries
        if self.form == FILES:
            make_whiteout(path, FILES)
            self._whited.add(path)
        elif self.overlay:
            self._create(path, lambda p: os.mknod(p, stat.S_IFCHR, os.makedev(0, 0)))
            self._whited.add(path)
            if self.chown:
                self._chown(path, member)
        elif os.path.lexists(path):
            self._remove(path, os.lstat(path))

    def _opaque(self, dir_rel: str, member: TarEntry) -> None:
        directory = self._real_dir(dir_rel, member.name, create=self.overlay)
        if directory is None:
            return
        if self.overlay:
            try:
                self._mark_opaque(directory)
            except OSError as e:
                raise LayerError(f"{member.name}: cannot mark the directory opaque: {e.strerror}")
        else:
            self._purge(directory)

    def _mark_opaque(self, directory: str) -> None:
        if self.form == FILES:
            make_opaque(directory, FILES)
        elif self.opaque_xattr is None:
            mark_opaque(directory)
        else:
            os.setxattr(directory, self.opaque_xattr, b"y", follow_symlinks=False)

    def _purge(self, directory: str) -> None:
        """Remove what lower layers put under `directory`, keeping this layer's entries."""
        self._settle()
        with os.scandir(directory) as children:
            for child in list(children):
                st = child.stat(follow_symlinks=False)
                if child.path not in self._written:
                    self._remove(child.path, st)
                elif stat.S_ISDIR(st.st_mode):
                    self._open_up(child.path, st)
                    self._purge(child.path)

    # -- paths -----------------------------------------------------------------------------------

    def _real_dir(self, rel: str, entry: str, *, create: bool) -> str | None:
        """The host path of directory `rel` (clean, "" for the root), symlinks resolved as if the
        root were `/`. Missing directories are made (0755, as Docker and containerd do) or, when
        not `create`, give None."""
        cached = self._dirs.get(rel)
        if cached is not None:
            return cached
        head, _, name = rel.rpartition("/")
        parent = self._real_dir(head, entry, create=create)
        path = parent and self._step(parent, name, entry, create)
        if path:
            self._dirs[rel] = path
        return path

    def _step(self, parent: str, name: str, entry: str, create: bool) -> str | None:
        """Resolve one name inside the real directory `parent`."""
        path = f"{parent}/{name}"
        if path in self._written:
            self._settle()
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            if not create:
                return None
            os.mkdir(path)
            self._made.add(path)
            os.chmod(path, 0o755)
            return path
        if stat.S_ISDIR(st.st_mode):
            self._open_up(path, st)
            return path
        if not stat.S_ISLNK(st.st_mode):
            raise LayerError(f"{entry}: {path[len(self.root) + 1:]} is not a directory")
        self._symlinks_left -= 1
        if self._symlinks_left < 0:
            raise LayerError(f"{entry}: too many levels of symbolic links")
        target = os.readlink(path)
        current = self.root if target.startswith("/") else parent
        for part in target.split("/"):
            if part == "..":
                current = current.rpartition("/")[0] if current != self.root else current
            elif part and part != ".":
                current = self._step(current, part, entry, create)
                if current is None:
                    return None
        return current

    def _open_up(self, path: str, st: os.stat_result) -> None:
        """Unprivileged, a read-only directory (a 0555 /usr) must be made writable to be filled;
        its mode is put back at the end."""
        if not self.privileged and st.st_mode & 0o300 != 0o300:
            self._restore.setdefault(path, stat.S_IMODE(st.st_mode))
            os.chmod(path, stat.S_IMODE(st.st_mode) | 0o700)

    def _create(self, path: str, make: Callable[[str], T]) -> T:
        """make(path), for a new non-directory; whatever is in the way goes first. Trying before
        looking saves a failing lstat per entry when filling an empty snapshot."""
        try:
            return make(path)
        except FileExistsError:
            self._remove(path, os.lstat(path))
            return make(path)

    def _remove(self, path: str, st: os.stat_result) -> None:
        self._settle()
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path, onerror=None if self.privileged else _open_up_and_retry)
        else:
            os.unlink(path)
        if stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode):
            self._dirs = {"": self.root}  # resolutions through it are stale

    # -- attributes ------------------------------------------------------------------------------

    def _attributes(self, target: str | int, member: TarEntry, *, chmod: bool = True,
                    times: bool = True, new: bool = False) -> None:
        """Owner, then mode (a chown clears setuid bits), then xattrs (a chown clears
        security.capability), then mtime. `target` is a path, never followed, or an open fd;
        `new` if this applier just made it."""
        follow = isinstance(target, int)
        if self.chown and not (new and (member.uid, member.gid) == self._born_owner):
            self._chown(target, member)
        if chmod:
            os.chmod(target, member.mode & 0o7777)
        for name, value in self._xattrs(member):
            try:
                os.setxattr(target, name, value, follow_symlinks=follow)
            except OSError as e:
                if e.errno == errno.EPERM:
                    self.warnings.append(f"{member.name}: xattr {name} not permitted here")
                elif e.errno != errno.ENOTSUP:
                    raise
        if times:
            os.utime(target, ns=(member.mtime_ns, member.mtime_ns), follow_symlinks=follow)

    def _chown(self, target: str | int, member: TarEntry) -> None:
        try:
            os.chown(target, member.uid, member.gid, follow_symlinks=isinstance(target, int))
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.EPERM):
                raise
            self.chown = False  # an id outside this user namespace's map: stop trying
            self.warnings.append(f"{member.name}: ownership not kept ({e.strerror})")

    def _xattrs(self, member: TarEntry) -> list[tuple[str, bytes]]:
        found = []
        for name, value in member.xattrs:
            if name.startswith(_OVERLAY_XATTRS):
                self.warnings.append(f"{member.name}: overlayfs xattr {name} ignored")
            else:
                found.append((name, value))
        return found


class _Writers:
    """Worker threads writing regular files in batches. Only new paths of a fresh root come here,
    so nothing is ever in a worker's way; the applier waits for them (`wait`) before it removes
    or replaces anything, so no path a worker uses can change under it. A worker's error is
    raised by the next `wait`.

    A batch holds files of one directory, and the batches of a directory go to one worker in turn:
    creating a file locks its directory, and two workers filling one directory spent their time
    waiting for each other in the kernel."""

    def __init__(self, applier: _Applier, workers: int) -> None:
        self._applier = applier
        self._jobs: list[queue.SimpleQueue] = [queue.SimpleQueue() for _ in range(workers)]
        self._results: queue.SimpleQueue = queue.SimpleQueue()
        self._batch: list[tuple[str, TarEntry, bytes]] = []
        self._directory = ""  # of the batch being gathered
        self._worker = 0      # the worker its batches go to
        self._outstanding = 0
        self._limit = 4 * workers  # batches in flight: bounds the bodies held in memory
        self._error: BaseException | None = None
        self._threads = [threading.Thread(target=self._work, args=(jobs,), daemon=True,
                                          name="unpack") for jobs in self._jobs]
        for thread in self._threads:
            thread.start()

    def add(self, directory: str, path: str, member: TarEntry, body: bytes) -> None:
        """Queue the file `path` of `directory` (both host paths)."""
        if directory != self._directory:
            if self._batch:
                self._send()
            self._directory = directory
            self._worker = (self._worker + 1) % len(self._jobs)
        self._batch.append((path, member, body))
        if len(self._batch) >= _BATCH:
            self._send()
            if self._outstanding > self._limit:
                self._collect()

    def wait(self) -> None:
        if self._batch:
            self._send()
        while self._outstanding:
            self._collect()
        error, self._error = self._error, None
        if error is not None:
            raise error

    def close(self) -> None:
        """Stop the workers once they are done, their errors dropped (the root is given up)."""
        self._batch.clear()
        for jobs in self._jobs:
            jobs.put(None)
        for thread in self._threads:
            thread.join()

    def _send(self) -> None:
        self._jobs[self._worker].put(self._batch)
        self._batch = []
        self._outstanding += 1

    def _collect(self) -> None:
        error = self._results.get()
        self._outstanding -= 1
        if error is not None and self._error is None:
            self._error = error

    def _work(self, jobs: queue.SimpleQueue) -> None:
        while (batch := jobs.get()) is not None:
            error = None
            for path, member, body in batch:
                try:
                    self._applier._file(path, member, body)
                except _BAD_VALUE as e:
                    error = LayerError(f"{member.name}: {_reason(e)}")
                    break
                except BaseException as e:  # noqa: BLE001 - handed to the applier's thread
                    error = e
                    break
            self._results.put(error)


def _umask() -> int:
    """This process's umask, read without changing it (os.umask would, for every thread);
    all bits when unknown, so every file gets its chmod."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o777


def _reason(error: Exception) -> str:
    return getattr(error, "strerror", None) or str(error)


def _is_dir(path: str) -> bool:
    """A real directory, not a symlink to one."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):  # gone, or a parent replaced by a file
        return False


def remove_tree(path: str) -> None:
    """Remove a tree this process applied layers to, also unprivileged (read-only directories
    in it are opened up first)."""
    shutil.rmtree(path, onerror=None if os.geteuid() == 0 else _open_up_and_retry)


def _open_up_and_retry(func, failed: str, exc_info) -> None:
    """shutil.rmtree error handler for unprivileged removal: a read-only directory inside the tree
    blocks deleting its children, so give it (and the failed entry, if a directory) u+rwx."""
    error = exc_info[1]
    if not isinstance(error, PermissionError):
        raise error
    for directory in (os.path.dirname(failed), failed):
        st = os.lstat(directory)
        if stat.S_ISDIR(st.st_mode):
            os.chmod(directory, stat.S_IMODE(st.st_mode) | 0o700)
    if stat.S_ISDIR(os.lstat(failed).st_mode):
        shutil.rmtree(failed, onerror=_open_up_and_retry)
    else:
        os.unlink(failed)
