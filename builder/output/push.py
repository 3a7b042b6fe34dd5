"""Pushing an image of the build or of the local store to a registry (`--push`, `pybuild push`).

Layers are pushed gzip-compressed unless zstd is asked for (every consumer reads gzip; zstd needs
an OCI manifest, gzip goes in a Docker schema2 manifest, which every registry and Docker version
reads). A layer that came from the same registry is not compressed again: its pulled blob is named
and mounted from the repository it came from, so pushing `FROM` a company base moves only the new
layers. Layers compressed for the push (a few at a time) are uploaded while they are compressed.
"""
from __future__ import annotations

from collections.abc import Callable

from layers.archive import Attached
from layers.blobstore import BlobStore
from layers.compression import Compression
from layers.image import parse_config
from layers.reference import Reference
from layers.registry.compress_upload import push_compressing
from layers.registry.mediatypes import layer_compression
from layers.registry.parallel import run_all
from layers.layerblob import LayerBlob
from layers.registry.push import push_image
from layers.registry.transport import Session
from layers.registry.variants import known_layer, variants

_WORKERS = 3  # layers compressed and streamed at a time, as push_image uploads them


def push(ref: Reference, config: bytes, blobs: BlobStore, compression: Compression,
         session: Session, media_types: str = "",
         annotations: tuple[tuple[str, str], ...] = (),
         attach: Callable[[bytes], tuple[Attached, ...]] | None = None) -> str:
    """Push the image whose config is `config` (its layers in `blobs`) as `ref`, its manifest
    annotated with `annotations`; returns the manifest digest. `media_types` ("oci" or
    "docker") chooses the manifest's family; by default the compression does, and annotations
    make it OCI (Docker's schema 2 has no annotations). `attach` as for push_image: then the
    digest is the pushed index's."""
    if compression is Compression.NONE:
        compression = Compression.GZIP
    diff_ids = parse_config(config).diff_ids
    layers: dict[str, LayerBlob] = {}
    sources = []
    for diff_id in diff_ids:
        pulled = [v for v in variants(blobs, diff_id)
                  if layer_compression(v.media_type) is compression
                  and v.source.partition("/")[0] == ref.registry]
        if pulled:
            repository = pulled[0].source.partition("/")[2]
            sources.append(repository)
            layers[diff_id] = LayerBlob(pulled[0].digest, pulled[0].size, pulled[0].media_type,
                                        _reader(session, repository, pulled[0].digest))
        elif made := known_layer(blobs, diff_id, compression):
            layers[diff_id] = made

    def compress(diff_id: str) -> None:
        layers[diff_id] = push_compressing(session, ref, blobs, diff_id, compression)

    run_all(compress, [d for d in dict.fromkeys(diff_ids) if d not in layers], _WORKERS)
    family = media_types or ("oci" if compression is Compression.ZSTD or annotations
                             else "docker")
    return push_image(session, ref, config, [layers[d] for d in diff_ids], media_types=family,
                      mount_from=tuple(dict.fromkeys(sources)), annotations=annotations,
                      attach=attach)


def _reader(session: Session, repository: str, digest: str) -> Callable:
    """Reads a blob of another repository of the registry: what is uploaded when a mount is
    refused (the registry has the blob, but not for us)."""
    return lambda: session.open(f"/v2/{repository}/blobs/{digest}",
                                scope=f"repository:{repository}:pull")
