"""Random access to the files of an image archive, wherever they are: a directory (an OCI
layout), a plain tar read in place, or anything else (a compressed tar, a pipe) decompressed once
to a temp file beside the blobs. Reading an archive needs random access (a docker-save archive
puts manifest.json after the layers), and decompressing once beats tarfile's seeking inside a
compressed stream, which restarts it from the beginning.
"""
from __future__ import annotations

import io
import lzma
import os
import posixpath
import stat
import tarfile
import zlib
from collections.abc import Iterator
from typing import Any, BinaryIO

from layers.blobstore import BlobStore
from layers.compression import CHUNK, decompressing_reader
from layers.errors import LayerError

_MAX_LINKS = 16
# What a damaged compressed stream raises from read(): gzip's BadGzipFile and bz2's errors are
# OSErrors, a truncated stream is an EOFError.
_DECOMPRESS_ERRORS = (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError)


def decompressed(stream: BinaryIO, where: str, first: int = CHUNK) -> Iterator[bytes]:
    """`stream`'s content, decompressed, in chunks, the first of at most `first` bytes (a caller
    sniffing the head gets it before damage further on is found). A damaged stream is a
    LayerError naming `where`; errors of whoever consumes the chunks (a full disk) pass through
    untouched."""
    import zstandard  # 7 ms with the `platform` it imports: paid only by a build that reads one
    try:
        reader = decompressing_reader(stream)
        size = first
        while chunk := reader.read(size):
            yield chunk
            size = CHUNK
    except (*_DECOMPRESS_ERRORS, zstandard.ZstdError) as error:
        raise LayerError(f"{where}: cannot be decompressed: {error}") from None


def clean_name(name: Any, path: str) -> str:
    """A name inside the archive, normalised; one that leaves the archive is refused."""
    if not isinstance(name, str) or not name or "\0" in name:
        raise LayerError(f"{path}: invalid path {name!r} in the archive")
    cleaned = posixpath.normpath(name).lstrip("/")
    if cleaned in ("", ".", "..") or cleaned.startswith("../"):
        raise LayerError(f"{path}: path {name!r} leads outside the archive")
    return cleaned


class DirectoryFiles:
    """An archive unpacked into a directory (an OCI layout, usually)."""

    def __init__(self, root: str) -> None:
        self.root = root

    def exists(self, name: str) -> bool:
        return os.path.isfile(os.path.join(self.root, name))

    def open(self, name: str) -> BinaryIO:
        """A regular file only: a blob that is (a link to) /dev/zero or a FIFO would never end
        or never start. Opened without blocking, then checked, so a FIFO is refused, not waited
        on."""
        try:
            fd = os.open(os.path.join(self.root, name),
                         os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise LayerError(f"{self.root}: {name} is missing") from None
        except OSError as error:
            raise LayerError(f"{self.root}: {name}: {error.strerror}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise LayerError(f"{self.root}: {name} is not a regular file")
        return os.fdopen(fd, "rb")

    def size(self, name: str) -> int:
        """The size of a file `open` opened."""
        return os.path.getsize(os.path.join(self.root, name))

    def close(self) -> None:
        """Nothing to release."""


class TarFiles:
    """An uncompressed tar file, its member headers read once. Each `open` gets its own file
    handle on the member's bytes, so layers can be read by several threads at once."""

    def __init__(self, path: str, display: str, owned: bool = False) -> None:
        self.path = path
        self.display = display
        self.owned = owned
        try:
            with tarfile.open(path, "r:") as tar:
                members = tar.getmembers()
        except tarfile.TarError as error:
            raise LayerError(f"{display}: not a tar archive ({error})") from None
        self.members = {posixpath.normpath(m.name).lstrip("/"): m for m in members}

    def exists(self, name: str) -> bool:
        return name in self.members

    def open(self, name: str) -> BinaryIO:
        member = self._regular(name)
        handle = open(self.path, "rb")
        handle.seek(member.offset_data)
        return io.BufferedReader(_Window(handle, member.size), CHUNK)

    def size(self, name: str) -> int:
        return self._regular(name).size

    def _regular(self, name: str) -> tarfile.TarInfo:
        """The regular file a name leads to, following the links `docker save` writes for a layer
        shared by several images."""
        for _ in range(_MAX_LINKS):
            member = self.members.get(name)
            if member is None:
                raise LayerError(f"{self.display}: {name} is missing from the archive")
            if member.isreg() and not member.issparse():
                return member
            if member.issym():
                name = clean_name(posixpath.join(posixpath.dirname(name), member.linkname),
                                  self.display)
            elif member.islnk():
                name = clean_name(member.linkname, self.display)
            else:
                raise LayerError(f"{self.display}: {name} is not a regular file")
        raise LayerError(f"{self.display}: {name}: too many levels of links")

    def close(self) -> None:
        if self.owned:
            os.unlink(self.path)


class _Window(io.RawIOBase):
    """`size` bytes of a file from its current position; closing it closes the file."""

    def __init__(self, handle: BinaryIO, size: int) -> None:
        self._handle = handle
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:
        view = memoryview(buffer)[:self._left]
        count = self._handle.readinto(view) if len(view) else 0
        if len(view) and not count:
            raise LayerError(f"{self._handle.name}: the archive ends inside a member")
        self._left -= count
        return count

    def close(self) -> None:
        self._handle.close()
        super().close()


ArchiveFiles = DirectoryFiles | TarFiles


def open_files(path: str, blobs: BlobStore) -> ArchiveFiles:
    """The files of the archive at `path` (see the module doc); close them when done."""
    if os.path.isdir(path):
        return DirectoryFiles(path)
    with open(path, "rb") as handle:
        if handle.seekable():
            try:
                return TarFiles(path, path)
            except LayerError:
                handle.seek(0)
        with blobs.temp() as (out, temp_path):
            for chunk in decompressed(handle, path):
                out.write(chunk)
    try:
        return TarFiles(temp_path, path, owned=True)
    except BaseException:
        os.unlink(temp_path)
        raise
