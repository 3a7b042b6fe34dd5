"""The tarball output: written to a temp name beside the target and renamed, so a failed build
never leaves a half-written file; or streamed to stdout with `-o -`."""
from __future__ import annotations

import sys
from collections.abc import Callable

from builder.output.atomicfile import replacing
from builder.output.earlytar import EarlyTarball
from layers.archive import ArchiveImage, write_archive
from layers.blobstore import BlobStore
from layers.compression import Compression
from layers.image import ImageConfig
from layers.layerblob import LayerBlob
from layers.registry.variants import compressed_layer


def layer_blobs(store: BlobStore, image: ImageConfig, compression: Compression) -> tuple[LayerBlob, ...]:
    """The image's layers as the archive will hold them, compressing on request (the stored
    layers are uncompressed, named by diff ID)."""
    return tuple(compressed_layer(store, diff_id, compression) for diff_id in image.diff_ids)


def write_output(destination: str, image: ArchiveImage,
                 progress: Callable[[int, int], None] | None = None, *,
                 oci_created: str | None = None, early: EarlyTarball | None = None) -> str:
    """Write the archive; returns the manifest digest. `progress` and `oci_created` as for
    `write_archive`; `early`: the file begun while the build ran, finished if it fits."""
    if destination == "-":
        return write_archive(sys.stdout.buffer, image, progress, oci_created=oci_created)
    if early is not None:
        with early.taken(list(dict.fromkeys(layer.digest for layer in image.layers))) as begun:
            if begun is not None:
                out, head = begun
                return write_archive(out, image, progress, oci_created=oci_created, head=head)
    with replacing(destination) as out:
        return write_archive(out, image, progress, oci_created=oci_created)
