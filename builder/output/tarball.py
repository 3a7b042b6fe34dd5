"""The tarball output: written to a temp name beside the target and renamed, so a failed build
never leaves a half-written file; or streamed to stdout with `-o -`."""
from __future__ import annotations

import os
import sys
from collections.abc import Callable

from builder.output.atomicfile import replacing
from layers.archive import ArchiveImage, LayerBlob, write_archive
from layers.blobstore import BlobStore
from layers.compression import Compression, compress_file
from layers.image import ImageConfig


def layer_blobs(store: BlobStore, image: ImageConfig, compression: Compression) -> tuple[LayerBlob, ...]:
    """The image's layers as the archive will hold them, compressing on request (the stored
    layers are uncompressed, named by diff ID)."""
    return tuple(compressed_layer(store, diff_id, compression) for diff_id in image.diff_ids)


def compressed_layer(store: BlobStore, diff_id: str, compression: Compression) -> LayerBlob:
    """A stored layer as a blob compressed with `compression`. A compressed blob is kept in the
    store and remembered as a variant of the layer, so it is made once, not for every output,
    push or cache export; one pulled in that compression is reused as it came."""
    path = store.path(diff_id)
    if compression is Compression.NONE:
        return LayerBlob(path, diff_id, os.path.getsize(path), compression.media_type)
    from layers.registry.mediatypes import layer_compression
    from layers.registry.variants import Variant, remember, variants
    for variant in variants(store, diff_id):
        if layer_compression(variant.media_type) is compression and store.has(variant.digest):
            return LayerBlob(store.path(variant.digest), variant.digest, variant.size,
                             compression.media_type)
    with store.temp() as (handle, temp_path):
        handle.close()
        digest = compress_file(path, temp_path, compression)
    final = store.commit(temp_path, digest.digest)
    remember(store, diff_id, Variant(digest.digest, digest.size, compression.media_type, ""))
    return LayerBlob(final, digest.digest, digest.size, compression.media_type)


def write_output(destination: str, image: ArchiveImage,
                 progress: Callable[[int, int], None] | None = None) -> str:
    """Write the archive; returns the manifest digest. `progress` as for `write_archive`."""
    if destination == "-":
        return write_archive(sys.stdout.buffer, image, progress)
    with replacing(destination) as out:
        return write_archive(out, image, progress)

