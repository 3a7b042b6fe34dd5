"""A layer unpacked into its snapshot while it is read: `pybuild load` and a pull store the
uncompressed layer tar and unpack it in the one pass, so the first build has nothing left to
unpack and no layer is read twice. The snapshot is kept only once the caller has checked the
layer's digests (the chain ID that names it promises exactly those bytes)."""
from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, BinaryIO

from layers.errors import LayerError

if TYPE_CHECKING:
    from layers.snapshots import Progress, SnapshotStore


def stored(chunks: Iterator[bytes], out: BinaryIO, digest) -> Iterator[bytes]:
    """`chunks`, each hashed into `digest` and written to `out` before it is passed on."""
    for chunk in chunks:
        digest.update(chunk)
        out.write(chunk)
        yield chunk


class StreamedSnapshot:
    """The snapshot of one layer (of `chain_id`) made while its chunks are consumed, if a store
    and chain are given and this process is root; kept by `commit`, removed if the block it was
    opened in fails first. A non-root process (`pybuild load` as a user) cannot give the files
    the layer's owners: a rootless build unpacks them inside its user namespace instead."""

    def __init__(self, snapshots: SnapshotStore | None, chain_id: str | None,
                 diff_id: str) -> None:
        self._snapshots = snapshots if chain_id is not None and os.geteuid() == 0 else None
        self._chain_id = chain_id
        self._diff_id = diff_id
        self._directory: str | None = None

    def __enter__(self) -> StreamedSnapshot:
        if self._snapshots is not None:
            self._directory = self._snapshots.temp()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._drop()

    @property
    def unpacks(self) -> bool:
        """Whether the layer is unpacked as it is read (else only read)."""
        return self._directory is not None

    def consume(self, chunks: Iterator[bytes], progress: Progress | None = None) -> None:
        """Read the layer tar `chunks` to their end, unpacking them. A layer the unpacker refuses
        is only not unpacked (the build that needs its files says why it cannot have them); what
        stops the chunks (a damaged stream, a full disk under the blob) is raised. The unpacker
        tells `progress(entries, bytes)` how far it got."""
        if self._directory is not None:
            reader = _ChunkReader(chunks)
            try:
                self._snapshots.unpack(reader, self._directory, self._diff_id, progress)
            except LayerError:
                if reader.failure is not None:
                    raise reader.failure from None
                self._drop()
        for _ in chunks:
            continue

    def commit(self) -> None:
        """Keep the snapshot: call once the layer's digests are checked."""
        if self._directory is not None:
            self._snapshots.commit(self._directory, self._chain_id)
            self._directory = None

    def _drop(self) -> None:
        if self._directory is not None:
            self._snapshots.discard(self._directory)
            self._directory = None


class ReadProgress:
    """A layer's progress counted in the bytes read of it as stored (compressed, maybe: what
    the bar of a download or an archive's layer can run to), reported after every chunk that
    `watched` passes and whenever the unpacker calls, with the entries the unpacker last said;
    `finish` reports the last figures, once the reader has drained the layer."""

    def __init__(self, report: Progress, read: Callable[[], int]) -> None:
        self._report = report
        self._read = read
        self._entries = 0
        self._reported = -1

    def __call__(self, entries: int, _consumed: int = 0) -> None:
        self._entries, self._reported = entries, self._read()
        self._report(entries, self._reported)

    def watched(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            yield chunk
            self(self._entries)

    def finish(self) -> None:
        if self._read() != self._reported:
            self(self._entries)


class _ChunkReader(io.RawIOBase):
    """Chunks as a readable stream; `failure` is the error the chunks ended with, if any (the
    unpacker reports it as its own)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._left = memoryview(b"")
        self.failure: Exception | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:
        if not self._left:
            try:
                self._left = memoryview(next(self._chunks, b""))
            except Exception as error:
                self.failure = error
                raise
        count = min(len(buffer), len(self._left))
        buffer[:count] = self._left[:count]
        self._left = self._left[count:]
        return count
