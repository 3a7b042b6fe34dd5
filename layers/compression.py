"""Layer compression (none, gzip, zstd) with the blob digest computed in the same pass, and the
reverse: a reader that recognises any compression a layer or an ADD archive may come in.

gzip is level 1 by default: zlib's level 6 costs 2.5x its CPU for blobs about 7% smaller, and a
push waits for it (skopeo's Go gzip is faster at its default level than zlib at 1). It is
compressed in 1 MiB blocks on every core, pigz-style: each block is raw deflate primed with the
previous block's last 32 KiB and ended with a flush, so the blocks join into one ordinary gzip
member that any reader accepts (Python's gzip, `gzip -d`, Go's gzip reader). Within a block, each
4 KiB span (or each 512-byte tar block of a span that mixes kinds) is judged on its own, and runs
that look incompressible (already compressed files, random data) are written as stored blocks, not
deflated: zlib spends twice as long per byte on noise as on text only to store it anyway, and a
layer's small files mix the two at about that scale (64 KiB spans deflated the noise of every
small file beside a text one: a third more CPU on the registry benchmark's layer). A run of text
after stored bytes is deflated without history (a full flush): 1-2% bigger than one serial zlib
stream. The header carries no name and mtime 0, and the bytes depend only on the input and the
level, never on the number of cores: output is reproducible. zstd uses zstandard's own worker
threads; its multi-threaded output is likewise independent of the thread count.
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
_SPAN = 4096  # what is judged compressible or not, as a whole unless its samples disagree
_PROBE = 64  # bytes of a sample judged noise or not
_TAR_BLOCK = 512
_NOISE = 48  # distinct byte values in 64 bytes of noise: about 57, under 48 6 times in 100,000
_STORED_MAX = 65535  # bytes in one stored deflate block


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
    """One gzip member whose deflate blocks are compressed in parallel (see the module doc), by
    twice as many threads as there are cores: a thread holds the GIL between its deflate calls
    (judging spans, joining pieces), and meanwhile another's deflate keeps its core busy."""
    from concurrent.futures import ThreadPoolExecutor  # with logging, 10 ms a build seldom needs
    workers = 2 * (os.cpu_count() or 1)
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
    """Raw deflate of one block, primed with the data before it, ending on a byte boundary: runs
    of compressible pieces deflated (the first with the 32 KiB before it), the others stored."""
    view = memoryview(block)
    pieces: list[bytes | memoryview] = []
    compressor = None
    judged = itertools.chain.from_iterable(_judge(block, at) for at in range(0, len(block), _SPAN))
    runs = [(next(run)[0], compressible)
            for compressible, run in itertools.groupby(judged, lambda piece: piece[1])]
    for (start, compressible), (end, _) in zip(runs, runs[1:] + [(len(block), False)]):
        if not compressible:
            pieces.extend(_stored(view[start:end]))
            continue
        if compressor is None:
            compressor = _compressor(level, dictionary[-_WINDOW:] if start == 0 else b"")
        pieces.append(compressor.compress(view[start:end]))
        pieces.append(compressor.flush(zlib.Z_FULL_FLUSH))  # forget: stored bytes may follow
    return b"".join(pieces)


def _judge(block: bytes, at: int) -> list[tuple[int, bool]]:
    """Whether the span of `block` at `at` looks worth deflating, as (offset, compressible) pieces.
    An ASCII span is (text compresses at any level); otherwise a sample at a quarter and one at
    three quarters are judged, and when they disagree (a small file of text beside one of noise)
    each 512-byte piece, a tar block, is judged alone."""
    span = block[at:at + _SPAN]
    if span.isascii():
        return [(at, True)]
    first, second = (_noise(span[offset:offset + _PROBE])
                     for offset in (len(span) // 4, max(0, len(span) * 3 // 4 - _PROBE)))
    if first == second:
        return [(at, not first)]
    return [(at + offset, piece.isascii() or not _noise(piece[:_PROBE]))
            for offset in range(0, len(span), _TAR_BLOCK)
            for piece in [span[offset:offset + _TAR_BLOCK]]]


def _noise(sample: bytes) -> bool:
    """Whether `sample` uses as many distinct byte values as noise does: machine code and text
    of any script use fewer, compressed and random data do not. Counting is 10x cheaper than a
    trial deflate, whose setup alone costs more than a span's share of the work."""
    return len(set(sample)) >= _NOISE


def _compressor(level: int, history: bytes):
    """A raw deflate compressor (no zlib header) that starts as if `history` had come before."""
    if history:
        return zlib.compressobj(level, zlib.DEFLATED, -15, zdict=history)
    return zlib.compressobj(level, zlib.DEFLATED, -15)


def _stored(data: memoryview) -> list[bytes | memoryview]:
    """`data` as non-final stored deflate blocks, which begin on the byte boundary a flush left:
    a header byte, the length and its complement, the bytes."""
    pieces: list[bytes | memoryview] = []
    for at in range(0, len(data), _STORED_MAX):
        piece = data[at:at + _STORED_MAX]
        pieces += (struct.pack("<BHH", 0, len(piece), len(piece) ^ 0xFFFF), piece)
    return pieces


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
