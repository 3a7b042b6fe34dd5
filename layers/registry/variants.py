"""Which compressed blobs are known to hold a stored layer, so a push of a layer that came from a
registry can name (HEAD, or mount from its source repository) the blob the registry already has
instead of compressing and uploading it again.

Layers are stored uncompressed, by diff ID; a pull records each verified pairing beside the blob
store, one small JSON file per pair, written to a temp file (layers/scratch.py) and renamed (no file is ever edited,
so concurrent pulls cannot lose each other's records); `compressed_layer` records the blobs an
output, push or cache export compresses the same way:

    <cache root>/compressed/sha256/<diff ID hex>/<blob digest hex>.json
        {"digest": "sha256:…", "size": 1234, "mediaType": "…tar+gzip",
         "source": "registry.example/team/base"}

`source` is the repository the blob was last pulled from.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass

from layers.blobstore import BlobStore
from layers.compression import Compression, compress_file
from layers.image import dumps
from layers.layerblob import LayerBlob, stored_blob
from layers.registry.mediatypes import layer_compression


@dataclass(frozen=True)
class Variant:
    """A compressed blob whose uncompressed content is a stored layer."""

    digest: str
    size: int
    media_type: str
    source: str


def _directory(blobs: BlobStore, diff_id: str) -> str:
    return os.path.join(blobs.variants, os.path.basename(blobs.path(diff_id)))


def remember(blobs: BlobStore, diff_id: str, variant: Variant) -> None:
    directory = _directory(blobs, diff_id)
    os.makedirs(directory, exist_ok=True)
    with blobs.temp() as (handle, temp):
        handle.write(dumps({"digest": variant.digest, "size": variant.size,
                            "mediaType": variant.media_type, "source": variant.source}))
    os.replace(temp, os.path.join(directory, variant.digest.partition(":")[2] + ".json"))


def variants(blobs: BlobStore, diff_id: str) -> tuple[Variant, ...]:
    """The compressed blobs known for `diff_id`, sorted by digest; unreadable records are
    skipped (they are only a shortcut)."""
    directory = _directory(blobs, diff_id)
    try:
        names = sorted(name for name in os.listdir(directory) if name.endswith(".json"))
    except FileNotFoundError:
        return ()
    found = []
    for name in names:
        try:
            with open(os.path.join(directory, name), "rb") as handle:
                data = json.load(handle)
            found.append(Variant(data["digest"], data["size"], data["mediaType"], data["source"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return tuple(found)


def compressed_layer(store: BlobStore, diff_id: str, compression: Compression, *,
                     tee: Callable[[bytes], None] | None = None) -> LayerBlob:
    """A stored layer as a blob compressed with `compression`. A compressed blob is kept in the
    store and remembered as a variant of the layer, so it is made once, not for every output,
    push or cache export; one pulled in that compression is reused as it came. `tee` is handed
    the pieces of a blob compressed now as they are written, nothing for one made before."""
    path = store.path(diff_id)
    if compression is Compression.NONE:
        return stored_blob(path, diff_id, compression.media_type)
    made = known_layer(store, diff_id, compression)
    if made is not None:
        return made
    with store.temp() as (handle, temp_path):
        handle.close()
        digest = compress_file(path, temp_path, compression, tee=tee)
    final = store.commit(temp_path, digest.digest)
    remember(store, diff_id, Variant(digest.digest, digest.size, compression.media_type, ""))
    return stored_blob(final, digest.digest, compression.media_type, digest.size)


def known_layer(store: BlobStore, diff_id: str, compression: Compression) -> LayerBlob | None:
    """The blob of a stored layer in `compression` that the store already holds, if any."""
    for variant in variants(store, diff_id):
        if layer_compression(variant.media_type) is compression and store.has(variant.digest):
            return stored_blob(store.path(variant.digest), variant.digest,
                               compression.media_type, variant.size)
    return None
