"""The tarball output: written to a temp name beside the target and renamed, so a failed build
never leaves a half-written file; or streamed to stdout with `-o -`."""
from __future__ import annotations

import os
import sys
import tempfile

from layers.archive import ArchiveImage, LayerBlob, write_archive
from layers.blobstore import BlobStore
from layers.compression import Compression, compress_file
from layers.image import ImageConfig


def layer_blobs(store: BlobStore, image: ImageConfig, compression: Compression) -> tuple[LayerBlob, ...]:
    """The image's layers as the archive will hold them, compressing on request (the stored
    layers are uncompressed, named by diff ID)."""
    blobs = []
    for diff_id in image.diff_ids:
        path = store.path(diff_id)
        if compression is Compression.NONE:
            blobs.append(LayerBlob(path, diff_id, os.path.getsize(path), compression.media_type))
            continue
        with store.temp() as (handle, temp_path):
            handle.close()
            digest = compress_file(path, temp_path, compression)
        final = store.commit(temp_path, digest.digest)
        blobs.append(LayerBlob(final, digest.digest, digest.size, compression.media_type))
    return tuple(blobs)


def write_output(destination: str, image: ArchiveImage) -> str:
    """Write the archive; returns the manifest digest."""
    if destination == "-":
        return write_archive(sys.stdout.buffer, image)
    directory = os.path.dirname(os.path.abspath(destination))
    fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(destination)}.")
    try:
        with os.fdopen(fd, "wb") as out:
            digest = write_archive(out, image)
        os.chmod(temp, 0o644)
        os.replace(temp, destination)
    except BaseException:
        os.unlink(temp)
        raise
    return digest

