"""Deterministic POSIX (ustar + PAX) layer tars, written fast.

Python's tarfile manages about 60 MB/s and 3,000 files/s here, and looks host users up; layers need
neither. Here headers are built per entry from an `Entry`, file bodies are read straight into a
staging buffer, and a helper thread hashes and writes each full buffer while the next ones fill,
so `finish()` has the diff ID without a second pass. Equal input gives equal bytes: empty
uname/gname, integer mtimes, no PAX time records, xattrs in sorted order.
"""
from __future__ import annotations

import enum
import errno
import hashlib
import os
import queue
import stat
import struct
import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, BinaryIO

from layers.errors import LayerError

# A staging buffer is handed to the helper thread once it holds STAGE bytes; a few of them let
# the reader run ahead while the helper hashes and writes (sha256 at ~1.4 GB/s is the slowest
# stage of a layer of large files). Fewer, larger hand-offs keep the two threads from waiting on
# each other and on the GIL. Past STAGE a buffer has CHUNK bytes of room, so a read or a header
# never needs less than CHUNK at a time.
CHUNK = 1 << 20
STAGE = 4 << 20
_BUFFERS = 4
# Staging buffers of finished layers, kept for the process's next layers (stages built at the
# same time take from them too); at most _SPARES (20 MB).
_SPARE: queue.SimpleQueue[memoryview] = queue.SimpleQueue()
_SPARES = _BUFFERS
WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
KEPT_XATTRS = ("security.capability",)

_ZEROS = bytes(512)
_END_OF_ARCHIVE = bytes(1024)
_MAX_ID = 0o7777777            # largest uid, gid or device number in an 8-byte octal field
_MAX_OCTAL12 = 0o77777777777   # largest size or mtime in a 12-byte octal field
_PAX_NAME = b"././@PaxHeader"
_MAGIC = b"ustar\x0000"
# name, mode..mtime, checksum, typeflag, linkname, magic+version, uname+gname, devices, prefix+pad;
# struct pads every field with NULs.
_USTAR = struct.Struct("100s48s8s1s100s8s64s16s167s")
_FIXED_SUM = 8 * 0x20 + sum(_MAGIC)  # the checksum field counts as eight spaces
_NO_DEVICE = bytes(16)
_BAD_PARTS = frozenset(("", ".", ".."))  # empty: leading, trailing or doubled slash

Source = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO | None


class Kind(enum.Enum):
    """What an entry is; the value is its tar typeflag. Sockets have none: layers skip them."""

    FILE = b"0"
    HARDLINK = b"1"
    SYMLINK = b"2"
    CHAR = b"3"
    BLOCK = b"4"
    DIR = b"5"
    FIFO = b"6"


@dataclass(frozen=True, slots=True)
class Entry:
    """One layer entry.

    `path` is relative posix with no leading `/` or `./` and no trailing `/` (the writer adds the
    slash to directories). `mode` holds permission and setuid/setgid/sticky bits; the kind gives the
    type. `linkname` is a symlink's target, or for HARDLINK the path of an earlier entry of the same
    layer. A HARDLINK must carry its target's full mode, uid, gid, mtime and xattrs: Docker applies
    a link entry's header to the shared inode, so a link with other values changes the file itself.
    `entry_from_stat` on a later path of the same inode gives exactly that.
    """

    path: str
    kind: Kind
    mode: int
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    size: int = 0
    linkname: str = ""
    devmajor: int = 0
    devminor: int = 0
    xattrs: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True)
class LayerDigest:
    """What a finished layer is known by: sha256 of the tar ("sha256:<hex>") and its byte count."""

    diff_id: str
    size: int


# Enum member lookups cost as much as a dict lookup each on Python 3.11; headers are hot.
_FILE, _DIR = Kind.FILE, Kind.DIR
_DEVICES = frozenset((Kind.CHAR, Kind.BLOCK))
_S_IFMT = 0o170000
_TYPEFLAGS = {kind: kind.value for kind in Kind}
_KIND_OF_FORMAT = {stat.S_IFREG: Kind.FILE, stat.S_IFDIR: Kind.DIR, stat.S_IFLNK: Kind.SYMLINK,
                   stat.S_IFCHR: Kind.CHAR, stat.S_IFBLK: Kind.BLOCK, stat.S_IFIFO: Kind.FIFO}


def entry_from_stat(rel: str, st: os.stat_result, *, linkname: str = "",
                    xattrs: Iterable[tuple[str, bytes]] = (), uid: int | None = None,
                    gid: int | None = None, mode: int | None = None) -> Entry:
    """The entry for a file found at `rel`, from its lstat. For a symlink, `linkname` is its target;
    for a regular file, a `linkname` (the path an earlier entry wrote this inode under) makes it a
    HARDLINK that repeats the inode's header, as Docker needs. `uid`, `gid` and `mode` (permission
    bits), when given, replace the stat's: COPY sets its owner and --chmod while the entry is made,
    as building a frozen Entry twice per file shows in a large COPY."""
    st_mode = st.st_mode
    kind = _KIND_OF_FORMAT.get(st_mode & _S_IFMT)
    size = devmajor = devminor = 0
    if kind is _FILE:
        if linkname:
            kind = Kind.HARDLINK
        else:
            size = st.st_size
    elif kind is None:
        raise LayerError(f"{rel}: sockets cannot be stored in a layer")
    elif kind is Kind.SYMLINK and not linkname:
        raise LayerError(f"{rel}: a symlink entry needs its target as linkname")
    elif kind in _DEVICES:
        devmajor, devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    return Entry(rel, kind, st_mode & 0o7777 if mode is None else mode,
                 st.st_uid if uid is None else uid, st.st_gid if gid is None else gid,
                 st.st_mtime_ns // 1_000_000_000, size, linkname, devmajor, devminor,
                 tuple(sorted(xattrs)) if xattrs else ())


def read_xattrs(path: str) -> tuple[tuple[str, bytes], ...]:
    """The xattrs a layer keeps for `path`, without following a symlink: only `security.capability`,
    as containerd and Docker write. Everything else is host state or overlayfs bookkeeping
    (`trusted.overlay.*`, `security.selinux`, a browser's `user.xdg.origin.url`) that would make
    layers unreproducible or leak the host into the image. One listxattr per file, as most files
    have none."""
    try:
        present = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno == errno.ENOTSUP:
            return ()
        raise
    found = []
    for name in KEPT_XATTRS:
        if name in present:
            try:
                found.append((name, os.getxattr(path, name, follow_symlinks=False)))
            except OSError as e:
                if e.errno != errno.ENODATA:
                    raise
    return tuple(found)


class LayerWriter:
    """Streams one layer tar to `out` (any binary stream), hashing every byte on the way: the
    running sha256 is the diff ID. `clamp_mtime` (SOURCE_DATE_EPOCH) caps every mtime. Entries are
    written in the order given: the caller sorts them, puts parents first and never repeats a
    path. After an error the output is incomplete and must be discarded."""

    def __init__(self, out: BinaryIO, *, clamp_mtime: int | None = None) -> None:
        self._sink = _Sink(out)
        self._view = self._sink.take()
        self._capacity = len(self._view)
        self._pos = 0  # staged bytes; always below STAGE between calls
        self._max_mtime = _MAX_OCTAL12 if clamp_mtime is None else min(max(clamp_mtime, 0),
                                                                         _MAX_OCTAL12)
        self._finished = False
        self._content_hash = None
        self._ranges: list[tuple[Any, int, int]] = []  # per-file hashes of staged bytes

    def add(self, entry: Entry, source: Source = None, content_hash=None) -> None:
        """Write `entry`; a FILE's body comes from `source`: a host path (opened without following
        a symlink), bytes, or a readable binary stream, holding exactly `entry.size` bytes. A
        hashlib object as `content_hash` is fed the body on the way, so a caller that needs a
        file's own digest (the build cache) does not read the file a second time; it is fed on
        the hashing thread, so read its digest only after `finish()`."""
        path = entry.path
        if path.startswith(WHITEOUT_PREFIX) or "/" + WHITEOUT_PREFIX in path:
            raise LayerError(f"{path}: `.wh.` names are whiteouts; use add_whiteout/add_opaque")
        self._content_hash = content_hash
        try:
            self._add(entry, source)
        finally:
            self._content_hash = None

    def add_whiteout(self, path: str) -> None:
        """Record that `path` of a lower layer is deleted: an empty file `.wh.<name>` beside it,
        with mode 0, uid/gid 0 and mtime 0, as containerd writes them."""
        parent, _, name = path.rpartition("/")
        if not name or name.startswith(WHITEOUT_PREFIX):
            raise LayerError(f"{path}: cannot be whited out")
        self._add(Entry(_join(parent, WHITEOUT_PREFIX + name), Kind.FILE, 0))

    def add_opaque(self, directory: str) -> None:
        """Record that `directory` hides everything lower layers put in it: `<dir>/.wh..wh..opq`."""
        self._add(Entry(_join(directory.rstrip("/"), OPAQUE_MARKER), Kind.FILE, 0))

    def finish(self) -> LayerDigest:
        """Write the end-of-archive blocks, flush `out` (not close it) and return the digest."""
        if self._finished:
            raise LayerError("layer already finished")
        self._put(_END_OF_ARCHIVE)
        self._hand_off()
        self._finished = True
        return self._sink.finish(self._view)

    def _add(self, entry: Entry, source: Source = None) -> None:
        if self._finished:
            raise LayerError("layer already finished")
        header = self._header(entry)
        if source is None:
            if entry.kind is _FILE and entry.size:
                raise LayerError(f"{entry.path}: no source for {entry.size} bytes")
            self._put(header)
        elif entry.kind is not _FILE:
            raise LayerError(f"{entry.path}: only regular files have content")
        elif isinstance(source, (str, os.PathLike)):
            fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                self._put(header)
                if not self._small_body(fd, entry):
                    self._body(lambda view: os.readv(fd, (view,)), entry)
            finally:
                os.close(fd)
        elif isinstance(source, (bytes, bytearray, memoryview)):
            if len(source) != entry.size:
                raise LayerError(f"{entry.path}: {len(source)} bytes given for size {entry.size}")
            self._put(header)
            self._put(source)
            self._put(_ZEROS[:-entry.size % 512])
        else:
            self._put(header)
            self._body(source.readinto, entry)

    def _body(self, readinto: Callable[[memoryview], int], entry: Entry) -> None:
        """Move exactly entry.size bytes into the staging buffers. A read that could reach the
        end asks for one byte more than is left, so a file that grew is caught as surely as one
        that shrank; a short read there is EOF."""
        left = entry.size
        while True:
            pos = self._pos
            room = self._capacity - pos
            want = left + 1 if left < room else room
            n = readinto(self._view[pos:pos + want])
            if not n:
                break
            if n > left:
                raise LayerError(f"{entry.path}: file grew while being read "
                                 f"(expected {entry.size} bytes)")
            left -= n
            if self._content_hash is not None:
                self._ranges.append((self._content_hash, pos, pos + n))
            self._pos = pos + n
            if self._pos >= STAGE:
                self._hand_off()
            if not left and n < want:
                break
        if left:
            raise LayerError(f"{entry.path}: file shrank while being read "
                             f"(expected {entry.size} bytes)")
        self._put(_ZEROS[:-entry.size % 512])

    def _small_body(self, fd: int, entry: Entry) -> bool:
        """Read a body that fits the room left in the staging buffer, padding and all, with one
        read of one byte more than its size (a file that grew or shrank shows there); False, having
        read nothing, when it does not fit. Most files of a context are this small, and `_body`'s
        general loop cost more than the read itself."""
        size = entry.size
        pos = self._pos
        end = pos + size
        padded = end + (-size & 511)
        if padded + 1 > self._capacity:
            return False
        view = self._view
        n = os.readv(fd, (view[pos:end + 1],))
        while 0 < n < size:  # a short read need not be the end (a signal, a network file system)
            more = os.readv(fd, (view[pos + n:end + 1],))
            if not more:
                break
            n += more
        if n != size:
            raise LayerError(f"{entry.path}: file {'grew' if n > size else 'shrank'} while being "
                             f"read (expected {size} bytes)")
        if self._content_hash is not None:
            self._ranges.append((self._content_hash, pos, end))
        view[end:padded] = _ZEROS[:padded - end]
        self._pos = padded
        if padded >= STAGE:
            self._hand_off()
        return True

    def _header(self, e: Entry) -> bytes:
        """The ustar header of `e`, preceded by a PAX header when some value does not fit it."""
        path, kind = e.path, e.kind
        if "\0" in path or not _BAD_PARTS.isdisjoint(path.split("/")):
            raise LayerError(f"{path!r}: not a clean relative path")
        name = (path + "/" if kind is _DIR else path).encode("utf-8", "surrogateescape")
        link = e.linkname.encode("utf-8", "surrogateescape") if e.linkname else b""
        size = e.size if kind is _FILE else 0
        uid, gid, mtime = e.uid, e.gid, e.mtime
        prefix = pax = b""
        if not (len(name) <= 100 and name.isascii() and len(link) <= 100 and link.isascii()
                and 0 <= uid <= _MAX_ID and 0 <= gid <= _MAX_ID and 0 <= size <= _MAX_OCTAL12
                and not e.xattrs):
            if min(uid, gid, size) < 0:
                raise LayerError(f"{path}: negative uid, gid or size")
            records = []
            if len(name) > 100 or not name.isascii():
                split = _split_ustar(name)
                if split:
                    prefix, name = split
                else:
                    records.append((b"path", name))
                    name = _ascii_stub(name)
            if len(link) > 100 or not link.isascii():
                records.append((b"linkpath", link))
                link = _ascii_stub(link)
            if size > _MAX_OCTAL12:
                records.append((b"size", b"%d" % size))
                size = 0
            if uid > _MAX_ID:
                records.append((b"uid", b"%d" % uid))
                uid = 0
            if gid > _MAX_ID:
                records.append((b"gid", b"%d" % gid))
                gid = 0
            for xname, value in sorted(e.xattrs):
                records.append((b"SCHILY.xattr." + xname.encode("utf-8", "surrogateescape"),
                                bytes(value)))
            if records:
                pax = _pax(records)
        if kind in _DEVICES:
            if not (0 <= e.devmajor <= _MAX_ID and 0 <= e.devminor <= _MAX_ID):
                raise LayerError(f"{path}: device number out of range")
            devices = b"%07o\0%07o\0" % (e.devmajor, e.devminor)
        else:
            devices = _NO_DEVICE
        if not 0 <= mtime <= self._max_mtime:
            mtime = 0 if mtime < 0 else self._max_mtime
        return pax + _ustar(name, _TYPEFLAGS[kind], e.mode & 0o7777, uid, gid, size, mtime, link,
                            devices, prefix)

    def _put(self, data: bytes | bytearray | memoryview) -> None:
        n = len(data)
        pos = self._pos
        if pos + n > self._capacity:  # a bytes body larger than a stage: no need to stage it
            self._hand_off()
            self._sink.write_through(data)
            return
        self._view[pos:pos + n] = data
        self._pos = pos + n
        if self._pos >= STAGE:
            self._hand_off()

    def _hand_off(self) -> None:
        """Queue the staged bytes for hashing and writing; stage into a free buffer."""
        if self._pos:
            self._view = self._sink.submit(self._view, self._pos, self._ranges)
            self._pos = 0
            self._ranges = []


class _Sink:
    """Two helper threads that hash and write staged buffers, in order, to `out`: one hashes
    buffer n+1 for the diff ID while the other feeds buffer n to the files' own hashes and
    writes it. A layer's large files make the helpers the
    bottleneck (sha256 ~1.4 GB/s, then the write), its small files the reader; with more than two
    cores the hash and the write no longer share one (on two, one helper doing both measured the
    same within noise).

    Buffers go round: `take`/`submit` hand the writer a free one (waiting only when all are
    queued), the writing thread returns each to the free list. An error in it is raised in the
    writer at its next call. The threads end with `finish`, or when the writer is dropped after an
    error (they hold no reference to the sink, whose finalizer stops them)."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._hash = hashlib.sha256()
        self._size = 0
        self._errors: list[BaseException] = []  # the writing thread's mailbox
        self._error: BaseException | None = None
        self._jobs: queue.SimpleQueue[tuple[memoryview, int] | None] = queue.SimpleQueue()
        self._free: queue.SimpleQueue[memoryview] = queue.SimpleQueue()
        self._made = 0  # buffers are made as the layer needs them: a small one needs one, not 20 MB
        writes: queue.SimpleQueue[tuple[memoryview, int] | None] = queue.SimpleQueue()
        self._threads = (
            threading.Thread(target=_hash_jobs, args=(self._jobs, writes, self._hash),
                             name="layer-hash", daemon=True),
            threading.Thread(target=_write_jobs, args=(writes, self._free, out, self._errors),
                             name="layer-write", daemon=True))
        for thread in self._threads:
            thread.start()
        weakref.finalize(self, self._jobs.put, None)

    def take(self) -> memoryview:
        return self._next_free()

    def submit(self, buffer: memoryview, length: int,
               ranges: list[tuple[Any, int, int]] = ()) -> memoryview:
        """Queue `buffer[:length]`, and the (hash, start, end) slices of it that files' own
        hashes want; returns a free buffer to stage into next."""
        self._raise()
        self._size += length
        self._jobs.put((buffer, length, ranges))
        return self._next_free()

    def _next_free(self) -> memoryview:
        """A free buffer: one returned by the writing thread, else (while fewer than _BUFFERS
        exist) a spare an earlier layer left or a new one, else the next one the thread
        returns. A new one costs its zeroing: 3 ms, every RUN's layer, without the spares."""
        try:
            return self._free.get_nowait()
        except queue.Empty:
            if self._made < _BUFFERS:
                self._made += 1
                try:
                    return _SPARE.get_nowait()
                except queue.Empty:
                    return memoryview(bytearray(STAGE + CHUNK))
            return self._free.get()

    def write_through(self, data: bytes | bytearray | memoryview) -> None:
        """Hash and write `data` here, after everything queued before it."""
        self._wait_idle()
        self._size += len(data)
        self._hash.update(data)
        _write_all(self._out, data)

    def finish(self, staged: memoryview) -> LayerDigest:
        """Wait for the threads; the buffers, `staged` (the writer's) among them, go to the
        spares of the process for the next layer."""
        self._wait_idle()
        self._jobs.put(None)
        for thread in self._threads:
            thread.join()
        self._out.flush()
        for buffer in [staged, *(self._free.get() for _ in range(self._made - 1))]:
            if _SPARE.qsize() < _SPARES:
                _SPARE.put(buffer)
        return LayerDigest("sha256:" + self._hash.hexdigest(), self._size)

    def _wait_idle(self) -> None:
        """Wait until every queued buffer is written: all but the one being staged are free."""
        held = [self._free.get() for _ in range(self._made - 1)]
        for buffer in held:
            self._free.put(buffer)
        self._raise()

    def _raise(self) -> None:
        """Raise the writing thread's error, if any. It is taken out of the mailbox first: raised
        here, its traceback holds this sink, which the threads must not keep alive."""
        if self._errors:
            self._error = self._errors.pop()
        if self._error is not None:
            raise self._error


def _hash_jobs(jobs: queue.SimpleQueue, writes: queue.SimpleQueue, digest: hashlib._Hash) -> None:
    """The hashing thread: hash each queued buffer, then pass it on to be written."""
    while (job := jobs.get()) is not None:
        digest.update(job[0][:job[1]])
        writes.put(job)
    writes.put(None)


def _write_jobs(writes: queue.SimpleQueue, free: queue.SimpleQueue, out: BinaryIO,
                errors: list[BaseException]) -> None:
    """The writing thread: feed the files' own hashes their slices of each buffer, write it and
    free it (after a failure, only free). The files' hashes are fed here, not with the layer's:
    the same bytes hashed twice on one thread made it the bottleneck of a layer of large files,
    while this thread, which mostly copies into the page cache, waited."""
    failed = False
    while (job := writes.get()) is not None:
        buffer, length, ranges = job
        for content_hash, start, end in ranges:
            content_hash.update(buffer[start:end])
        if not failed:
            try:
                _write_all(out, buffer[:length])
            except BaseException as error:  # raised in the writer's thread by `_raise`
                failed = True
                errors.append(error)
        free.put(buffer)


def _write_all(out: BinaryIO, data: bytes | bytearray | memoryview) -> None:
    written = out.write(data)
    while written is not None and written < len(data):
        written += out.write(data[written:]) or 0


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def _split_ustar(name: bytes) -> tuple[bytes, bytes] | None:
    """(prefix, name) for the ustar fields when an ASCII path fits them split at a slash (the rule
    of Go's archive/tar), else None and a PAX path record is needed."""
    if not name.isascii():
        return None
    end = len(name)
    if end > 156:
        end = 156
    elif name[end - 1] == 0x2F:
        end -= 1
    cut = name.rfind(b"/", 0, end)
    if cut <= 0 or cut > 155 or not 0 < len(name) - cut - 1 <= 100:
        return None
    return name[:cut], name[cut + 1:]


def _ascii_stub(value: bytes) -> bytes:
    """What a reader without PAX support sees where a PAX record holds the real value."""
    return value.decode("latin-1").encode("ascii", "replace")[:100]


def _ustar(name: bytes, typeflag: bytes, mode: int, uid: int, gid: int, size: int, mtime: int,
           linkname: bytes, devices: bytes, prefix: bytes) -> bytes:
    """One 512-byte ustar header. The checksum is summed from the parts rather than the padded
    block (padding is zeros): this is the hottest code of a layer of small files."""
    numbers = b"%07o\0%07o\0%07o\0%011o\0%011o\0" % (mode, uid, gid, size, mtime)
    checksum = _FIXED_SUM + sum(name) + sum(numbers) + typeflag[0]
    if linkname:
        checksum += sum(linkname)
    if prefix:
        checksum += sum(prefix)
    if devices is not _NO_DEVICE:
        checksum += sum(devices)
    return _USTAR.pack(name, numbers, b"%06o\0 " % checksum, typeflag, linkname, _MAGIC, b"",
                       devices, prefix)


def _pax(records: list[tuple[bytes, bytes]]) -> bytes:
    """A PAX extended header ('x') holding `records`; `hdrcharset=BINARY` first when a value is not
    UTF-8 (a non-UTF-8 file name, or a binary xattr such as a capability set)."""
    if not all(_is_utf8(value) for _, value in records):
        records = [(b"hdrcharset", b"BINARY")] + records
    body = b"".join(_pax_record(key, value) for key, value in records)
    return (_ustar(_PAX_NAME, b"x", 0, 0, 0, len(body), 0, b"", _NO_DEVICE, b"")
            + body + _ZEROS[:-len(body) % 512])


def _pax_record(key: bytes, value: bytes) -> bytes:
    """`<length> key=value\\n`, where the decimal length counts itself."""
    length = len(key) + len(value) + 3
    digits = len(str(length))
    while len(str(length + digits)) != digits:
        digits += 1
    return b"%d %s=%s\n" % (length + digits, key, value)


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
