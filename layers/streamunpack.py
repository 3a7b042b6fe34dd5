"""A layer unpacked into its snapshot while it is read or written: `pybuild load` and a pull
store the uncompressed layer tar and unpack it in the one pass, and COPY/ADD unpack the layer they
write as they write it, so the step that needs its files (a RUN's lowerdir) has nothing left to
unpack and no layer is read twice. The snapshot is kept only once the caller has checked the
layer's digests or stored it (the chain ID that names it promises exactly those bytes)."""
from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, BinaryIO

from layers.errors import LayerError
from layers.handoff import Handoff

_QUEUED = 8  # chunks between a layer's writer and its unpack; the writer's are up to 5 MB

if TYPE_CHECKING:
    from layers.snapshots import Progress, SnapshotStore


def stored(chunks: Iterator[bytes], out: BinaryIO, digest) -> Iterator[bytes]:
    """`chunks`, passed on as they come, each also hashed into `digest` and written to `out` on
    a thread of its own (hashing and writing release the GIL: they overlap the unpack's Python
    instead of coming before it). When the chunks are exhausted, all of them are hashed and
    written; a failure to write (a full disk) is raised here, at the latest then."""
    def keep(kept: Iterator[bytes]) -> None:
        for chunk in kept:
            digest.update(chunk)
            out.write(chunk)

    handoff = Handoff(keep, "store-layer", _QUEUED)
    try:
        for chunk in chunks:
            if handoff.failure is not None:
                raise handoff.failure
            handoff.put(chunk)
            yield chunk
    finally:
        handoff.close()
    if handoff.failure is not None:
        raise handoff.failure


class StreamedSnapshot:
    """The snapshot of one layer (of `chain_id`, or of the chain `commit` names) made while its
    chunks are consumed, if a store is given and this process is root; kept by `commit`, removed
    if the block it was opened in fails first. A non-root process (`pybuild load` as a user)
    cannot give the files the layer's owners: a rootless build, root in its user namespace,
    unpacks them there instead."""

    def __init__(self, snapshots: SnapshotStore | None, chain_id: str | None,
                 diff_id: str) -> None:
        self._snapshots = snapshots if os.geteuid() == 0 else None
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

    def commit(self, chain_id: str | None = None) -> None:
        """Keep the snapshot, under `chain_id` if given (a written layer's chain is known only
        once it is written): call once the layer's digests are checked."""
        if self._directory is not None:
            self._snapshots.commit(self._directory, chain_id or self._chain_id)
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


class WrittenSnapshot:
    """The snapshot of a layer made from the bytes its writer writes, while it writes them:
    `tee(out)` is `out` whose every write is also queued (a few chunks at most: the writer waits
    for a slow unpack rather than hold the layer in memory) to a thread that unpacks them as
    `StreamedSnapshot` does, with the code that unpacks a stored layer, so the snapshot is the
    one a later unpack would make while the kernel's inode work runs beside the writer's. Only
    with a store, as root; `commit(chain_id)` once the layer is stored keeps it. Any failure,
    of the unpack or of the block it was opened in, leaves no snapshot and no temp directory:
    the unpack's own failure fails nothing (the step that needs the files unpacks the stored
    layer and says what is wrong with it)."""

    def __init__(self, snapshots: SnapshotStore | None) -> None:
        self._snapshot = StreamedSnapshot(snapshots, None, "being written")
        self._handoff: Handoff[bytes] | None = None
        self._ended = False

    def __enter__(self) -> WrittenSnapshot:
        self._snapshot.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._end()
        self._snapshot.__exit__(*exc_info)

    def tee(self, out: BinaryIO) -> BinaryIO:
        """`out`, its writes also unpacked; `out` itself when there is nothing to unpack."""
        if not self._snapshot.unpacks:
            return out
        self._handoff = Handoff(self._snapshot.consume, "layer-snapshot", _QUEUED)
        return _Tee(out, self)  # type: ignore[return-value]

    def put(self, chunk: bytes) -> None:
        # an empty chunk would read as the end; after a failure, only no snapshot
        if chunk and not self._ended and self._handoff.failure is None:
            self._handoff.put(chunk)

    def commit(self, chain_id: str) -> None:
        """Keep the snapshot of the written layer (wait for its unpack) as that of `chain_id`."""
        self._end()
        if self._handoff is None or self._handoff.failure is None:
            self._snapshot.commit(chain_id)

    def _end(self) -> None:
        if self._handoff is not None and not self._ended:
            self._ended = True
            self._handoff.close()


class _Tee:
    """What a layer writer writes to: `out`, with a copy of each write handed to `snapshot` (the
    writer reuses its buffers)."""

    def __init__(self, out: BinaryIO, snapshot: WrittenSnapshot) -> None:
        self._out = out
        self._snapshot = snapshot

    def write(self, data) -> int:
        written = self._out.write(data)
        self._snapshot.put(bytes(data[:written]))
        return written

    def flush(self) -> None:
        self._out.flush()


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
