"""Layers a build may use before they are here: those of imported cache records (`--cache-from`).

A cache hit only needs the layer's diff ID; its bytes are fetched when something reads them (a
RUN's lower dirs, a COPY --from, the exported image, a push), all missing ones of a request at
once, a few at a time. So a runner that imports a cache downloads only the layers the image it
makes needs, never those of intermediate steps it reused. The cache mounts an import holds are
layers too, fetched when a RUN that uses the mount runs with it empty (builder/session.py).
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import BinaryIO, ContextManager

from layers.blobstore import BlobStore
from layers.cachemanifest import MountBlob
from layers.image import Descriptor
from layers.registry.parallel import run_all
from layers.registry.pull import store_layer

_WORKERS = 4


@dataclass(frozen=True)
class RemoteLayer:
    """A compressed blob that decompresses to `diff_id`: `source` names where it is (a registry
    repository or a directory) and `open` reads it."""

    diff_id: str
    blob: Descriptor
    source: str
    open: Callable[[], ContextManager[BinaryIO]]


class RemoteLayers:
    """The remote layers (and cache mounts, by id) known to one build; guards the fetches under
    way. The first import that names a layer or a mount wins."""

    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs
        self.known: dict[str, RemoteLayer] = {}
        self.mounts: dict[str, MountBlob] = {}
        self._lock = threading.Lock()

    def add(self, layers: Iterable[RemoteLayer], mounts: Iterable[MountBlob] = ()) -> None:
        for layer in layers:
            self.known.setdefault(layer.diff_id, layer)
        for mount in mounts:
            if mount.diff_id in self.known:
                self.mounts.setdefault(mount.id, mount)

    def available(self, diff_id: str) -> bool:
        return diff_id in self.known

    def ensure(self, diff_ids: Iterable[str]) -> None:
        """Make every layer of `diff_ids` that is known here present in the blob store."""
        with self._lock:
            missing = [self.known[d] for d in dict.fromkeys(diff_ids)
                       if d in self.known and not self.blobs.has(d)]
            run_all(self._fetch, missing, _WORKERS)

    def _fetch(self, layer: RemoteLayer) -> None:
        with layer.open() as stream:
            store_layer(stream, layer.blob, layer.diff_id, self.blobs, layer.source)
