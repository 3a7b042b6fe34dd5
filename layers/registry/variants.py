"""Which compressed blobs are known to hold a stored layer, so a push of a layer that came from a
registry can name (HEAD, or mount from its source repository) the blob the registry already has
instead of compressing and uploading it again.

Layers are stored uncompressed, by diff ID; a pull records each verified pairing beside the blob
store, one small JSON file per pair, written to a temp file (layers/scratch.py) and renamed (no file is ever edited,
so concurrent pulls cannot lose each other's records):

    <cache root>/compressed/sha256/<diff ID hex>/<blob digest hex>.json
        {"digest": "sha256:…", "size": 1234, "mediaType": "…tar+gzip",
         "source": "registry.example/team/base"}

`source` is the repository the blob was last pulled from.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

from layers.blobstore import BlobStore
from layers.image import dumps


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
