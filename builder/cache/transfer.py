"""Build cache export (`--cache-to`) and import (`--cache-from`), to share a cache across runners.

The cache travels as one manifest (layers/cachemanifest.py) under a registry reference or in an
OCI layout directory. An import reads only the manifest and its config (the step records); the
layers stay where they are until a hit's layer is read (builder/cache/remote.py). An export pushes
or copies only the blobs the destination lacks: a layer the destination already holds is named,
not sent, so a runner that imported from and exports to the same place moves little.

Cache mounts (`mounts=true`) travel as more layers of the same manifest, named in its config
(layers/cachemanifest.py `MountBlob`): an unchanged mount packs to the same blob, which the
destination has, so only a changed one is sent.
"""
from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO, ContextManager, Iterator

from builder.output.atomicfile import replacing, write_atomically
from builder.cache.spec import CacheSpec
from builder.cache.remote import RemoteLayer
from builder.plan.state import RecordedState
from layers import cachemanifest
from layers.blobstore import BlobStore, blobs_dir
from layers.cachemanifest import CacheLayer, CacheRecord, MountBlob
from layers.errors import LayerError
from layers.image import OCI_MANIFEST, Descriptor, dumps, sha256_digest
from layers.registry.variants import compressed_layer

_REF_NAME = "org.opencontainers.image.ref.name"
_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'


@dataclass(frozen=True)
class ImportedCache:
    records: tuple[CacheRecord, ...]
    layers: tuple[RemoteLayer, ...]
    manifests: dict[str, list]
    mounts: tuple[MountBlob, ...]


@dataclass(frozen=True)
class Exported:
    """What an export wrote: its manifest's digest, the layers it names (by diff ID) and the
    digests of the blobs it sent (the destination lacked them)."""

    digest: str
    layers: dict[str, CacheLayer]
    sent: frozenset[str]


def import_cache(spec: CacheSpec, sessions: Callable) -> ImportedCache:
    """The records and layers of the cache `spec` names. Raises LayerError (the build goes on
    without it, with a warning)."""
    if spec.ref is not None:
        manifest, config, source, opener = _registry_cache(spec, sessions)
    else:
        manifest, config, source, opener = _directory_cache(spec)
    try:
        cache = cachemanifest.parse(manifest, config)
    except ValueError as error:
        raise LayerError(f"{spec.describe()}: {error}") from None
    layers = tuple(RemoteLayer(layer.diff_id, _descriptor(layer), source, opener(layer.digest))
                   for layer in cache.layers)
    return ImportedCache(cache.records, layers, cache.manifests, cache.mounts)


def export_cache(spec: CacheSpec, records: Iterable[CacheRecord], manifests: dict[str, list],
                 blobs: BlobStore, remote: dict[str, RemoteLayer], sessions: Callable,
                 mounts: tuple[MountBlob, ...] = ()) -> Exported:
    """Export `records` and the source `manifests` of their COPY steps, with every layer their
    states name, and the cache `mounts` (their tars stored or known remotely by diff ID)."""
    records = tuple(records)
    diff_ids = dict.fromkeys([*(d for r in records for d in RecordedState.of(r.state).diff_ids),
                              *(m.diff_id for m in mounts)])
    layers = [_layer(diff_id, spec, blobs, remote) for diff_id in diff_ids]
    config = cachemanifest.config_bytes(records, manifests, mounts)
    manifest = cachemanifest.manifest_bytes(config, tuple(layer for layer, _ in layers))
    if spec.ref is not None:
        digest, sent = _push(spec, sessions, layers, config, manifest)
    else:
        digest, sent = _write_directory(spec, layers, config, manifest)
    return Exported(digest, {layer.diff_id: layer for layer, _ in layers}, sent)


# -- the layers of an export ----------------------------------------------------------------

Opener = Callable[[], ContextManager[BinaryIO]]


def _layer(diff_id: str, spec: CacheSpec, blobs: BlobStore,
           remote: dict[str, RemoteLayer]) -> tuple[CacheLayer, Opener]:
    """A layer as the export names it, and how to read its compressed bytes. A layer known
    only remotely is named by its remote blob (read from there if the destination lacks it)."""
    if not blobs.has(diff_id) and diff_id in remote:
        layer = remote[diff_id]
        return CacheLayer(diff_id, layer.blob.digest, layer.blob.size, layer.blob.media_type), \
            layer.open
    blob = compressed_layer(blobs, diff_id, spec.compression)
    return CacheLayer(diff_id, blob.digest, blob.size, blob.media_type), blob.open


def _descriptor(layer: CacheLayer) -> Descriptor:
    return Descriptor(layer.media_type, layer.digest, layer.size)


# -- registry --------------------------------------------------------------------------------

def _registry_cache(spec: CacheSpec, sessions: Callable):
    from layers.registry.pull import fetch_blob, get_manifest
    session = sessions(spec.ref)
    manifest, _, _ = get_manifest(session, spec.ref, (OCI_MANIFEST,))
    try:
        described = json.loads(manifest)["config"]
    except (ValueError, KeyError, TypeError, RecursionError):
        raise LayerError(f"{spec.describe()}: a damaged cache manifest") from None
    config = io.BytesIO()
    fetch_blob(session, spec.ref, described["digest"], config, size=described.get("size"))
    source = f"{spec.ref.registry}/{spec.ref.repository}"

    def opener(digest: str) -> Opener:
        return lambda: session.open(f"/v2/{spec.ref.repository}/blobs/{digest}",
                                    scope=f"repository:{spec.ref.repository}:pull")
    return manifest, config.getvalue(), source, opener


def _push(spec: CacheSpec, sessions: Callable, layers: list[tuple[CacheLayer, Opener]],
          config: bytes, manifest: bytes) -> tuple[str, frozenset[str]]:
    from layers.registry.parallel import run_all
    from layers.registry.push import push_blob, push_manifest
    session = sessions(spec.ref)
    sent: set[str] = set()

    def push(item: tuple[CacheLayer, Opener]) -> None:
        if push_blob(session, spec.ref, item[0].digest, item[0].size, item[1]):
            sent.add(item[0].digest)
    run_all(push, layers, 4)
    push_blob(session, spec.ref, sha256_digest(config), len(config), lambda: io.BytesIO(config))
    return push_manifest(session, spec.ref, manifest, OCI_MANIFEST), frozenset(sent)


# -- a directory (an OCI layout) -----------------------------------------------------------------

def _blob_path(directory: str, digest: str) -> str:
    return os.path.join(blobs_dir(directory), digest.partition(":")[2])


def _directory_cache(spec: CacheSpec):
    directory = spec.directory
    try:
        with open(os.path.join(directory, "index.json"), "rb") as handle:
            index = json.load(handle)
        chosen = [m for m in index.get("manifests", [])
                  if m.get("annotations", {}).get(_REF_NAME) == spec.tag]
    except (OSError, ValueError, AttributeError) as error:
        raise LayerError(f"cache {spec.describe()}: cannot read its index.json: {error}") from None
    if not chosen:
        raise LayerError(f"cache {spec.describe()}: no cache is tagged {spec.tag} there")
    manifest = _read_verified(directory, chosen[0]["digest"])
    try:
        config_digest = json.loads(manifest)["config"]["digest"]
    except (ValueError, KeyError, TypeError, RecursionError):
        raise LayerError(f"cache {spec.describe()}: a damaged cache manifest") from None
    config = _read_verified(directory, config_digest)

    def opener(digest: str) -> Opener:
        return lambda: open(_blob_path(directory, digest), "rb")
    return manifest, config, directory, opener


def _read_verified(directory: str, digest: str) -> bytes:
    try:
        with open(_blob_path(directory, digest), "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise LayerError(f"cache {directory}: blob {digest}: {error.strerror}") from None
    if sha256_digest(data) != digest:
        raise LayerError(f"cache {directory}: blob {digest} is corrupt")
    return data


def _write_directory(spec: CacheSpec, layers: list[tuple[CacheLayer, Opener]], config: bytes,
                     manifest: bytes) -> tuple[str, frozenset[str]]:
    """Blobs first, each under a temp name renamed into place, then index.json by rename: a
    reader (or a crash) never sees an index naming a blob that is not whole."""
    directory = spec.directory
    os.makedirs(blobs_dir(directory), exist_ok=True)
    sent = set()
    for layer, opener in layers:
        with _absent(directory, layer.digest) as out:
            if out is not None:
                with opener() as stream:
                    shutil.copyfileobj(stream, out, 1 << 20)
                sent.add(layer.digest)
    for data in (config, manifest):
        with _absent(directory, sha256_digest(data)) as out:
            if out is not None:
                out.write(data)
    digest = sha256_digest(manifest)
    index_path = os.path.join(directory, "index.json")
    try:
        with open(index_path, "rb") as handle:
            entries = json.load(handle).get("manifests", [])
    except (OSError, ValueError, AttributeError):
        entries = []
    entries = [e for e in entries if e.get("annotations", {}).get(_REF_NAME) != spec.tag]
    entries.append(Descriptor(OCI_MANIFEST, digest, len(manifest), ((_REF_NAME, spec.tag),)).to_json())
    write_atomically(index_path, dumps({"schemaVersion": 2, "manifests": entries}))
    write_atomically(os.path.join(directory, "oci-layout"), _LAYOUT)
    return digest, frozenset(sent)


@contextmanager
def _absent(directory: str, digest: str) -> Iterator[BinaryIO | None]:
    """A temp file that becomes blob `digest` of the layout, or None when the blob is there."""
    final = _blob_path(directory, digest)
    if os.path.exists(final):
        yield None
        return
    with replacing(final) as out:
        yield out
