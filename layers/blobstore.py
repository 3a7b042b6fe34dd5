"""Content-addressed blob store: `blobs/sha256/<hex>` under the cache root.

A blob is written to a temporary file in the process's own temp directory on the same filesystem
(layers/scratch.py) and renamed into place, so a reader never sees a partial blob and a crashed
writer leaves only a temp file, which the next build or prune removes. No fsync on the hot
path: content addressing makes a torn blob detectable (its digest no longer matches its name).
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from typing import BinaryIO, Iterator
from contextlib import contextmanager

from layers.errors import LayerError
from layers.scratch import private_dir


def blobs_dir(root: str) -> str:
    """Where the blobs of a cache root (or an OCI layout) lie, one file per digest's hex."""
    return os.path.join(root, "blobs", "sha256")


def variants_dir(root: str) -> str:
    """Where a cache root records the compressed blobs of each stored layer, one directory per
    layer's diff ID hex."""
    return os.path.join(root, "compressed", "sha256")


class BlobStore:
    """The blob directory of one cache root, and beside it the records of which compressed blobs
    hold each stored layer (layers/registry/variants.py)."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.dir = blobs_dir(root)
        self.variants = variants_dir(root)
        os.makedirs(self.dir, exist_ok=True)

    def path(self, digest: str) -> str:
        algorithm, _, hexdigest = digest.partition(":")
        if algorithm != "sha256" or len(hexdigest) != 64:
            raise LayerError(f"unsupported digest {digest!r}")
        return os.path.join(self.dir, hexdigest)

    def has(self, digest: str) -> bool:
        return os.path.exists(self.path(digest))

    def put_bytes(self, data: bytes) -> str:
        """Store bytes; returns their digest."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if not self.has(digest):
            with self.temp() as (handle, temp_path):
                handle.write(data)
            self.commit(temp_path, digest)
        return digest

    def read_bytes(self, digest: str) -> bytes:
        with open(self.path(digest), "rb") as handle:
            data = handle.read()
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise LayerError(f"blob {digest} is corrupt (its content no longer matches its digest)")
        return data

    @contextmanager
    def temp(self) -> Iterator[tuple[BinaryIO, str]]:
        """A temp file on the blobs' filesystem, removed unless committed."""
        fd, temp_path = tempfile.mkstemp(dir=private_dir(self.root), prefix="blob-")
        try:
            with os.fdopen(fd, "wb") as handle:
                yield handle, temp_path
        except BaseException:
            os.unlink(temp_path)
            raise

    def commit(self, temp_path: str, digest: str) -> str:
        """Move a written temp file into place under its digest."""
        final = self.path(digest)
        os.chmod(temp_path, 0o644)
        os.replace(temp_path, final)
        return final
