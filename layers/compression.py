"""Layer compression (none, gzip, zstd) with the blob digest computed in the same pass, and the
reverse: a reader that recognises any compression a layer or an ADD archive may come in.

gzip is level 1 by default: zlib's level 6 costs 2.5x its CPU for blobs about 7% smaller, and a
push waits for it (skopeo's Go gzip is faster at its default level than zlib at 1). It is
compressed in 1 MiB blocks on every core, pigz-style: each block is raw deflate primed with the
previous block's last 32 KiB and ended with a sync flush, so the blocks join into one ordinary gzip
member that any reader accepts (Python's gzip, `gzip -d`, Go's gzip reader). Within a block, runs
of 64 KiB spans that look incompressible (already compressed files, random data) are stored, not
deflated: zlib spends twice as long per byte on noise as on text only to store it anyway. The
header carries no name and mtime 0, and the bytes depend only on the input and the level, never
on the number of cores: output is reproducible. zstd uses zstandard's own worker threads; its
multi-threaded output is likewise independent of the thread count.
"""
from __future__ import annotations

import enum
import hashlib
import io
import itertools
import os
import struct
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

CHUNK = 1 << 20
_WINDOW = 32 * 1024
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no flags, mtime 0, OS unknown
_FINAL_EMPTY_BLOCK = b"\x03\x00"  # BFINAL, fixed Huffman, end-of-block: closes the deflate stream
_SNIFF = 6
_SPAN = 64 * 1024  # what is judged compressible or not, as a whole
_PROBES, _PROBE_BYTES = 8, 512  # samples spread over a span
_NOISE = 190  # distinct byte values in a sample of noise: about 221, never under 200 in 10,000 tries


class Compression(enum.Enum):
    """How a layer blob is stored. zstd has no Docker media type: it implies an OCI manifest."""

    NONE = "none"
    GZIP = "gzip"
    ZSTD = "zstd"

    @property
    def media_type(self) -> str:
        """The OCI layer media type."""
        suffix = {"none": "", "gzip": "+gzip", "zstd": "+zstd"}[self.value]
        return "application/vnd.oci.image.layer.v1.tar" + suffix

    @property
    def docker_media_type(self) -> str | None:
        """The Docker schema2 layer media type, None for zstd (Docker manifests cannot list it)."""
        return {"none": "application/vnd.docker.image.rootfs.diff.tar",
                "gzip": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "zstd": None}[self.value]


@dataclass(frozen=True)
class BlobDigest:
    """A stored blob: sha256 of its bytes ("sha256:<hex>") and their count."""

    digest: str
    size: int


class _HashingWriter:
    """Passes writes on to `out` (and `tee`), hashing and counting them: the digest costs no
    second read."""

    def __init__(self, out: BinaryIO, tee: Callable[[bytes], None] | None) -> None:
        self._out = out
        self._tee = tee
        self._hash = hashlib.sha256()
        self._size = 0

    def write(self, data: bytes) -> int:
        self._hash.update(data)
        self._size += len(data)
        self._out.write(data)
        if self._tee is not None:
            self._tee(data)
        return len(data)

    def digest(self) -> BlobDigest:
        return BlobDigest("sha256:" + self._hash.hexdigest(), self._size)


def compress_file(src_path: str, dst_path: str, compression: Compression, *,
                  level: int | None = None,
                  tee: Callable[[bytes], None] | None = None) -> BlobDigest:
    """Write `src_path` compressed to `dst_path` and return the digest of what was written.
    `level` defaults to 1 for gzip and 3 for zstd. NONE copies, for a uniform blob path. `tee`
    is handed each piece as it is written, in order (a push uploads them meanwhile)."""
    with open(src_path, "rb") as src, open(dst_path, "wb") as dst:
        out = _HashingWriter(dst, tee)
        if compression is Compression.GZIP:
            _gzip(src, out, 1 if level is None else level)
        elif compression is Compression.ZSTD:
            import zstandard
            cctx = zstandard.ZstdCompressor(level=3 if level is None else level, threads=-1)
            cctx.copy_stream(src, out, size=os.fstat(src.fileno()).st_size, read_size=CHUNK,
                             write_size=CHUNK)
        else:
            while block := src.read(CHUNK):
                out.write(block)
        return out.digest()


def _gzip(src: BinaryIO, out: _HashingWriter, level: int) -> None:
    """One gzip member whose deflate blocks are compressed in parallel (see the module doc)."""
    from concurrent.futures import ThreadPoolExecutor  # with logging, 10 ms a build seldom needs
    workers = os.cpu_count() or 1
    crc = length = 0
    previous = b""
    pending: deque = deque()
    out.write(_GZIP_HEADER)
    with ThreadPoolExecutor(workers, thread_name_prefix="gzip") as pool:
        while block := src.read(CHUNK):
            crc = zlib.crc32(block, crc)
            length += len(block)
            pending.append(pool.submit(_deflate_block, block, previous[-_WINDOW:], level))
            previous = block
            if len(pending) > 2 * workers:
                out.write(pending.popleft().result())
        while pending:
            out.write(pending.popleft().result())
    out.write(_FINAL_EMPTY_BLOCK)
    out.write(struct.pack("<II", crc, length & 0xFFFFFFFF))


def _deflate_block(block: bytes, dictionary: bytes, level: int) -> bytes:
    """Raw deflate of one block, primed with the data before it, ending on a byte boundary: each
    run of compressible spans deflated with the 32 KiB before it, each other run stored."""
    pieces = []
    start = 0
    spans = range(0, len(block), _SPAN)
    for compressible, run in itertools.groupby(spans, lambda at: _compressible(block, at)):
        end = min(list(run)[-1] + _SPAN, len(block))
        history = block[max(0, start - _WINDOW):start]
        if len(history) < _WINDOW and dictionary:
            history = dictionary[len(history) - _WINDOW:] + history
        pieces.append(_deflate(block[start:end], history, level if compressible else 0))
        start = end
    return b"".join(pieces)


def _compressible(block: bytes, at: int) -> bool:
    """Whether the span of `block` at `at` looks worth deflating: any of a few samples of it uses
    fewer distinct byte values than noise does (text and machine code use far fewer; compressed
    and random data do not). Counting is 10x cheaper than a trial deflate, whose setup alone
    costs more than a span's share of the work."""
    span = min(_SPAN, len(block) - at)
    step = max(1, span // _PROBES)
    return any(len(set(block[offset:min(offset + _PROBE_BYTES, at + span)])) < _NOISE
               for offset in range(at, at + span, step))


def _deflate(data: bytes, history: bytes, level: int) -> bytes:
    """Raw deflate of `data` (stored at level 0) as if `history` had come just before it."""
    if history and level:
        compressor = zlib.compressobj(level, zlib.DEFLATED, -15, zdict=history)
    else:
        compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)


class _Prefixed(io.RawIOBase):
    """A stream that yields `head` (bytes already read to sniff the format) and then the rest of
    `stream`, so sniffing needs neither seek nor peek (registry responses have neither)."""

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        self._head = head
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        return self._stream.readinto(buffer)


def decompressing_reader(fileobj: BinaryIO) -> BinaryIO:
    """A readable stream of `fileobj`'s content, decompressed according to its magic bytes: gzip,
    bzip2, xz, zstd (also after a skippable frame), or else as it is. For base-image layers and for
    archives given to ADD. Closing the result leaves `fileobj` open."""
    head = b""
    while len(head) < _SNIFF and (more := fileobj.read(_SNIFF - len(head))):
        head += more
    stream = io.BufferedReader(_Prefixed(head, fileobj), CHUNK)
    if head.startswith(b"\x1f\x8b"):
        import gzip
        return gzip.GzipFile(fileobj=stream, mode="rb")
    if head.startswith(b"BZh"):
        import bz2
        return bz2.BZ2File(stream)
    if head.startswith(b"\xfd7zXZ\x00"):
        import lzma
        return lzma.LZMAFile(stream)
    skippable_frame = len(head) >= 4 and head[0] & 0xF0 == 0x50 and head[1:4] == b"\x2a\x4d\x18"
    if head.startswith(b"\x28\xb5\x2f\xfd") or skippable_frame:
        import zstandard
        return zstandard.ZstdDecompressor().stream_reader(stream, read_across_frames=True,
                                                          closefd=False)
    return stream
