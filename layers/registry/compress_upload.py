"""Pushing a stored layer that has no blob in the wanted compression yet: the compressed pieces go
to the registry as they come out of the compressor while the blob is written to the store, so the
upload costs no time of its own (skopeo and `docker push` overlap them the same way).

When the streamed upload fails (it cannot be retried: the pieces are gone), the compression still
finishes into the store and the caller's ordinary push (HEAD, then a retried upload from the file)
sends the blob.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from layers.blobstore import BlobStore
from layers.compression import Compression
from layers.layerblob import LayerBlob
from layers.reference import Reference
from layers.registry.errors import RegistryError
from layers.registry.push import push_streamed
from layers.registry.transport import Session
from layers.registry.variants import compressed_layer

_DEPTH = 16  # pieces (1 MiB at most each) waiting for the socket at most


class _Pipe:
    """Pieces from the compressing thread to the request body. Once the request has given up,
    pieces are dropped, so the compressor never waits on a reader that has gone."""

    def __init__(self) -> None:
        self._queue: queue.Queue[bytes] = queue.Queue(_DEPTH)
        self._abandoned = threading.Event()

    def send(self, piece: bytes) -> None:
        if piece:
            self._put(piece)

    def close(self) -> None:
        self._put(b"")  # the end

    def abandon(self) -> None:
        self._abandoned.set()

    def pieces(self) -> Iterator[bytes]:
        while piece := self._queue.get():
            yield piece

    def _put(self, piece: bytes) -> None:
        while not self._abandoned.is_set():
            try:
                self._queue.put(piece, timeout=0.1)
                return
            except queue.Full:
                continue


def push_compressing(session: Session, ref: Reference, store: BlobStore, diff_id: str,
                     compression: Compression) -> LayerBlob:
    """The layer `diff_id` compressed into the store (as `compressed_layer` makes it) and, unless
    the streamed upload failed, already in `ref`'s repository."""
    pipe = _Pipe()
    with ThreadPoolExecutor(1, thread_name_prefix="compress") as pool:
        made: Future[LayerBlob] = pool.submit(_compress, pipe, store, diff_id, compression)
        try:
            push_streamed(session, ref, pipe.pieces(), lambda: made.result().digest)
        except RegistryError:
            pass  # the caller's push sends the finished blob, with retries
        finally:
            pipe.abandon()
        return made.result()


def _compress(pipe: _Pipe, store: BlobStore, diff_id: str, compression: Compression) -> LayerBlob:
    try:
        return compressed_layer(store, diff_id, compression, tee=pipe.send)
    finally:
        pipe.close()
