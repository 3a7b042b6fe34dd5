"""The one layer-blob type every output takes: the tarball writer, docker load (which reads that
tarball) and the pusher, as go-containerregistry's `v1.Layer` serves its writers."""
from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO


@dataclass(frozen=True)
class LayerBlob:
    """A layer as an image's manifest names it: its blob's digest, size and media type, and how
    to read the blob (called once per read; an upload retry reads again, so a file opened must
    be seekable for chunked uploads, and the tarball writer sends a file's bytes by sendfile)."""

    digest: str
    size: int
    media_type: str
    open: Callable[[], BinaryIO]


def stored_blob(path: str, digest: str, media_type: str, size: int | None = None) -> LayerBlob:
    """The blob held in the file `path` (its size read from the file unless given)."""
    return LayerBlob(digest, os.path.getsize(path) if size is None else size, media_type,
                     functools.partial(open, path, "rb"))
