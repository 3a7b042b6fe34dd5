"""Pulling an image: the manifest (through an index to the host's platform), its config, and its
layers into the blob store.

Nothing from the registry is trusted unverified: a manifest fetched by digest must hash to it
(and to `Docker-Content-Digest` when sent), every blob to its descriptor's digest and size, and
every layer, decompressed, to its diff ID in the config. Each layer is read once: downloaded,
hashed, decompressed and hashed again, and written to the store in the same pass.

A layer's compression is read from its magic bytes, as Docker and containerd do, so a layer whose
media type says gzip but whose bytes are plain tar still pulls; the media type must still name a
layer tar, so an artifact that is not an image is refused.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import threading
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, BinaryIO, Sequence

from layers.archive_files import decompressed
from layers.blobstore import BlobStore
from layers.compression import CHUNK
from layers.errors import LayerError
from layers.image import Descriptor, chain_ids, is_digest, parse_config, sha256_digest
from layers.platform import Platform
from layers.reference import Reference
from layers.registry.errors import RegistryError, about
from layers.registry.mediatypes import DOCKER_SCHEMA1, INDEXES, MANIFESTS, layer_compression
from layers.registry.parallel import run_all
from layers.registry.transport import BodyLimit, Response, Session
from layers.registry.variants import Variant, remember
from layers.streamunpack import ReadProgress, StreamedSnapshot, stored

if TYPE_CHECKING:
    from layers.snapshots import SnapshotStore, Unpacking

ACCEPT = (*INDEXES, *MANIFESTS)
# distribution's own limit for manifests and indexes; configs list a history entry per layer,
# so they get twice that. A registry sending more is refused before it fills memory.
MANIFEST_LIMIT = BodyLimit(4 << 20, "manifests and indexes")
CONFIG_LIMIT = BodyLimit(8 << 20, "image configs")


@dataclass(frozen=True)
class Resolved:
    """An image manifest found for a reference and a platform, with its config (verified)."""

    manifest_digest: str
    manifest: bytes
    media_type: str
    config: bytes
    config_digest: str
    layers: tuple[Descriptor, ...]
    index_digest: str | None = None


def pull_scope(ref: Reference) -> str:
    return f"repository:{ref.repository}:pull"


def check_digest_header(response: Response, digest: str) -> None:
    """`Docker-Content-Digest`, when the registry sends one in our algorithm, must be ours."""
    claimed = response.header("Docker-Content-Digest")
    if claimed and claimed.startswith("sha256:") and claimed != digest:
        raise RegistryError(f"the registry says the manifest is {claimed}, but its content "
                            f"hashes to {digest}")


def get_manifest(session: Session, ref: Reference,
                 accept: Sequence[str] = ACCEPT) -> tuple[bytes, str, str]:
    """The manifest or index `ref` names: (its bytes, media type, digest)."""
    with about("pull", ref):
        response = session.request(
            "GET", f"/v2/{ref.repository}/manifests/{ref.digest or ref.tag or 'latest'}",
            scope=pull_scope(ref), headers={"Accept": ", ".join(accept)}, limit=MANIFEST_LIMIT)
        digest = sha256_digest(response.body)
        if ref.digest and digest != ref.digest:
            raise RegistryError(f"the registry sent a manifest that hashes to {digest}")
        check_digest_header(response, digest)
        document = _object(response.body, "manifest")
        media_type = document.get("mediaType") or \
            (response.header("Content-Type") or "").partition(";")[0].strip()
        if media_type in DOCKER_SCHEMA1:
            raise RegistryError("the image has a Docker schema 1 manifest, which is not "
                                "supported (push it again with a current Docker)")
        if media_type not in accept:
            raise RegistryError(f"unexpected manifest media type {media_type!r}")
        return response.body, media_type, digest


def resolve(session: Session, ref: Reference, platform: Platform) -> Resolved:
    """Find the image manifest of `ref` for `platform` and fetch its config."""
    with about("pull", ref):
        body, media_type, digest = get_manifest(session, ref)
        index_digest = None
        if media_type in INDEXES:
            index_digest = digest
            chosen = _choose(_object(body, "index"), platform)
            body, media_type, digest = get_manifest(session, replace(ref, digest=chosen.digest),
                                                    MANIFESTS)
            if len(body) != chosen.size:
                raise RegistryError(f"manifest {digest} is {len(body)} bytes, but the index "
                                    f"says {chosen.size}")
        manifest = _object(body, "manifest")
        config = _descriptor(manifest.get("config"))
        layers = manifest.get("layers")
        if not isinstance(layers, list):
            raise RegistryError(f"manifest {digest} has no list of layers")
        return Resolved(digest, body, media_type,
                        fetch_config(session, ref, config.digest, config.size), config.digest,
                        tuple(_descriptor(layer) for layer in layers), index_digest)


def fetch_config(session: Session, ref: Reference, digest: str, size: int | None) -> bytes:
    """An image config, verified, and no larger than CONFIG_LIMIT: one whose descriptor says
    more is refused before it is asked for."""
    with about("pull", ref):
        if size is not None and size > CONFIG_LIMIT.size:
            raise CONFIG_LIMIT.exceeded(f"config {digest}: {size} bytes")
        buffer = io.BytesIO()
        fetch_blob(session, ref, digest, buffer, size=size, limit=CONFIG_LIMIT)
        return buffer.getvalue()


def fetch_blob(session: Session, ref: Reference, digest: str, dest: BinaryIO, *,
               size: int | None = None, limit: BodyLimit | None = None) -> int:
    """Copy a blob to `dest`, verifying its digest (and `size`, when given); returns its size.
    Reading stops one byte past `size` or `limit`. On a RegistryError, `dest` holds unverified
    bytes: discard them."""
    with about("pull", ref), session.open(_blob_path(ref, digest), scope=pull_scope(ref)) as body:
        blob = _Verified(body, digest, size, limit=limit)
        shutil.copyfileobj(blob, dest, CHUNK)
        blob.check()
        return blob.size


def pull_layers(session: Session, ref: Reference, resolved: Resolved, blobs: BlobStore, *,
                workers: int = 4,
                progress: Callable[[int, int], None] | None = None,
                snapshots: SnapshotStore | None = None,
                unpacking: Unpacking | None = None) -> tuple[str, ...]:
    """Store the layers of `resolved`, uncompressed, under their diff IDs; returns the diff IDs.
    A layer whose diff ID the store already has is not downloaded. Each layer downloaded is
    remembered as a compressed variant of its diff ID (see `variants`). `progress` hears the
    bytes read so far and the bytes to read, after every read of every download (from the
    downloads' threads). With `snapshots`, each layer downloaded is unpacked into its snapshot
    as it arrives, where that is missing, inside `unpacking(diff_id, size)` if given (see
    `store_layer`)."""
    with about("pull", ref):
        try:
            diff_ids = parse_config(resolved.config).diff_ids
        except ValueError as error:
            raise RegistryError(f"config {resolved.config_digest}: {error}") from None
        if len(diff_ids) != len(resolved.layers):
            raise RegistryError(f"manifest {resolved.manifest_digest} lists "
                                f"{len(resolved.layers)} layers, but its config "
                                f"{len(diff_ids)} diff IDs")
        missing = {diff_id: (layer, chain_id) for layer, diff_id, chain_id
                   in zip(resolved.layers, diff_ids, chain_ids(diff_ids))
                   if not blobs.has(diff_id)}
        on_read = (_Transferred(sum(layer.size for layer, _ in missing.values()), progress).add
                   if progress else None)

        def pull(item: tuple[str, tuple[Descriptor, str]]) -> None:
            diff_id, (layer, chain_id) = item
            unpack = snapshots is not None and not os.path.isdir(snapshots.path(chain_id))
            with session.open(_blob_path(ref, layer.digest), scope=pull_scope(ref)) as stream:
                store_layer(stream, layer, diff_id, blobs, f"{ref.registry}/{ref.repository}",
                            on_read, snapshots if unpack else None, chain_id, unpacking)

        run_all(pull, missing.items(), workers)
        return diff_ids


def store_layer(stream: BinaryIO, blob: Descriptor, diff_id: str, blobs: BlobStore,
                source: str, on_read: Callable[[int], None] | None = None,
                snapshots: SnapshotStore | None = None, chain_id: str | None = None,
                unpacking: Unpacking | None = None) -> None:
    """Store the layer `stream` reads compressed (as `blob` describes it) under `diff_id`,
    checking both digests in the one pass, and remember the pair as a variant found at
    `source` (a repository, `registry/name`). `on_read` hears the size of every read. With
    `snapshots`, the layer is also unpacked into the snapshot of `chain_id` as it arrives;
    `unpacking(diff_id, blob size)`, if given, is entered around that unpack (not around a
    layer only stored) and gives the progress(entries unpacked, bytes downloaded) to call."""
    where = f"layer {blob.digest}"
    if layer_compression(blob.media_type) is None:
        raise RegistryError(f"{where}: {blob.media_type!r} is not a layer media type")
    with StreamedSnapshot(snapshots, chain_id, diff_id) as snapshot, \
            (unpacking(diff_id, blob.size) if unpacking and snapshot.unpacks
             else nullcontext()) as report:
        with blobs.temp() as (out, temp_path):
            verified = _Verified(stream, blob.digest, blob.size, on_read)
            progress = report and ReadProgress(report, lambda: verified.size)
            uncompressed = hashlib.sha256()
            try:
                chunks = stored(decompressed(io.BufferedReader(verified, CHUNK), where), out,
                                uncompressed)
                snapshot.consume(progress.watched(chunks) if progress else chunks, progress)
            except RegistryError:
                raise
            except LayerError as error:
                verified.check()  # a corrupt download explains a failed decompression best
                raise RegistryError(str(error)) from None
            verified.check()
            if progress:
                progress.finish()
            found = "sha256:" + uncompressed.hexdigest()
            if found != diff_id:
                raise RegistryError(f"{where}: uncompressed, it has diff ID {found}, but the "
                                    f"image config lists {diff_id}")
        blobs.commit(temp_path, diff_id)
        snapshot.commit()
    remember(blobs, diff_id, Variant(blob.digest, blob.size, blob.media_type, source))


class _Verified(io.RawIOBase):
    """A blob passed through and hashed on the way, so checking its digest costs no second
    read. `check` reads what the consumer left (trailing padding) before comparing. A blob
    longer than its size (or `limit`, without one) fails as soon as the excess is read."""

    def __init__(self, stream: BinaryIO, digest: str, size: int | None,
                 on_read: Callable[[int], None] | None = None,
                 limit: BodyLimit | None = None) -> None:
        self._stream = stream
        self._digest = digest
        self._expected_size = size
        self._limit = limit if size is None else None
        self._on_read = on_read
        self._hash = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:
        bound = self._expected_size if self._limit is None else self._limit.size
        if bound is not None:
            buffer = memoryview(buffer)[:bound - self.size + 1]
        count = self._stream.readinto(buffer)
        self._hash.update(memoryview(buffer)[:count])
        self.size += count
        if self._limit is not None and self.size > self._limit.size:
            raise self._limit.exceeded(f"blob {self._digest}")
        if self._expected_size is not None and self.size > self._expected_size:
            raise RegistryError(f"blob {self._digest}: more than the {self._expected_size} "
                                f"bytes its descriptor says")
        if self._on_read is not None:
            self._on_read(count)
        return count

    def check(self) -> None:
        while self.read(CHUNK):
            continue
        found = "sha256:" + self._hash.hexdigest()
        if found != self._digest:
            raise RegistryError(f"blob {self._digest}: the registry sent content that hashes "
                                f"to {found} (corrupt in the registry or in transit)")
        if self._expected_size is not None and self.size != self._expected_size:
            raise RegistryError(f"blob {self._digest}: {self.size} bytes, but its descriptor "
                                f"says {self._expected_size}")


class _Transferred:
    """The bytes a pull's downloads have read together; they read in threads, so the sum is
    guarded, and reported under the guard so that the reports never go backwards."""

    def __init__(self, total: int, report: Callable[[int, int], None]) -> None:
        self.total = total
        self.report = report
        self.done = 0
        self._lock = threading.Lock()

    def add(self, count: int) -> None:
        with self._lock:
            self.done += count
            self.report(self.done, self.total)


def _choose(index: dict[str, Any], platform: Platform) -> Descriptor:
    """The index entry for `platform`: an image manifest whose platform matches (an entry
    without a variant matches any variant)."""
    entries = [entry for entry in index.get("manifests") or () if isinstance(entry, dict)
               and isinstance(entry.get("platform"), dict)]
    for entry in entries:
        if entry.get("mediaType", MANIFESTS[0]) in MANIFESTS \
                and platform.matches(entry["platform"]):
            return _descriptor(entry)
    available = sorted({str(Platform(str(p.get("os", "")), str(p.get("architecture", "")),
                                     str(p.get("variant", ""))))
                        for p in (entry["platform"] for entry in entries)})
    raise RegistryError(f"no image for platform {platform}; the index has "
                        f"{', '.join(available) or 'no platforms'}")


def _object(body: bytes, what: str) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nested too deep
        document = None
    if not isinstance(document, dict):
        raise RegistryError(f"the {what} is not a JSON object")
    return document


def _descriptor(data: Any) -> Descriptor:
    if not isinstance(data, dict) or not isinstance(data.get("mediaType", ""), str) \
            or not is_digest(str(data.get("digest"))) or not isinstance(data.get("size"), int) \
            or data["size"] < 0:
        raise RegistryError(f"invalid descriptor in the manifest: {data!r}")
    return Descriptor(data.get("mediaType", ""), data["digest"], data["size"])


def _blob_path(ref: Reference, digest: str) -> str:
    return f"/v2/{ref.repository}/blobs/{digest}"
