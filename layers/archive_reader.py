"""Read images from `docker save` archives and OCI image layouts into the blob store: what
`pybuild load` and the archive forms of `--build-context` take.

An archive is a tar (plain, or compressed as a whole, as `docker save | gzip` makes) or a
directory. It has one or both of two views, and the OCI view wins when both are present, as in
containerd's importer, because its descriptors carry a digest for every blob:
- OCI image layout: `oci-layout`, `index.json` -> manifests (an index or manifest list inside is
  resolved to the host's platform) -> config and layers; tags from the `io.containerd.image.name`
  annotation, else from `org.opencontainers.image.ref.name` when that is a name and not only a tag.
- `docker save`: `manifest.json` -> `Config`, `Layers` (`blobs/sha256/<hex>` since Docker 25,
  `<id>/layer.tar`, possibly a symlink to another layer's, before), tags from `RepoTags`.

Everything but the layers (index, manifests, configs) is read and checked first, so a malformed
archive fails before any layer is touched. Then each layer is read once: decompressed (by magic
bytes: gzip, zstd, bzip2, xz or none) while its diff ID is hashed and the uncompressed tar is
written to the blob store under that diff ID, and refused unless the diff ID is the one the config
lists and, where a descriptor gives them, the stored bytes have its digest and size. A layer whose
diff ID is already stored is not read at all. Layers go through a thread pool: zlib, zstd and
hashlib release the GIL, so compressed layers decompress on several cores.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections.abc import Iterable
from contextlib import nullcontext
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

from layers.archive_files import clean_name, decompressed, open_files
from layers.blobstore import BlobStore
from layers.compression import CHUNK
from layers.errors import LayerError
from layers.image import (OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, chain_ids, is_digest, parse_config,
                          sha256_digest)
from layers.platform import host_platform
from layers.reference import Reference, parse_reference
from layers.streamunpack import ReadProgress, StreamedSnapshot, stored

if TYPE_CHECKING:
    from layers.snapshots import SnapshotStore, Unpacking

_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
_CONTAINERD_NAME = "io.containerd.image.name"
_REF_NAME = "org.opencontainers.image.ref.name"
_MAX_DOCUMENT = 64 << 20  # an index, manifest or config larger than this is not one
_MAX_NESTING = 4


@dataclass(frozen=True)
class LayerLocation:
    """Where a layer is in the archive, and what its descriptor promises (OCI view only)."""

    path: str
    digest: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class ArchiveEntry:
    """One image of an archive: its config as written, its tags, and the names the archive also
    knows it by (OCI `ref.name` annotations as written; manifest and index digests)."""

    config: bytes
    diff_ids: tuple[str, ...]
    layers: tuple[LayerLocation, ...]
    names: tuple[Reference, ...] = ()
    ref_names: tuple[str, ...] = ()
    digests: tuple[str, ...] = ()

    @property
    def image_id(self) -> str:
        return sha256_digest(self.config)


def read_archive(path: str, blobs: BlobStore, snapshots: SnapshotStore | None = None,
                 unpacking: Unpacking | None = None) -> tuple[ArchiveEntry, ...]:
    """Every image of the archive at `path`, with its layers imported into `blobs` (and unpacked
    into `snapshots` while they are read, if given); see `import_layers` for `unpacking`."""
    with ImageArchive(path, blobs) as archive:
        archive.import_layers(archive.entries, snapshots, unpacking)
        return archive.entries


class ImageArchive:
    """An opened archive whose images are read and checked, but whose layers are imported only
    on request: a build context names one image of a layout that may hold many."""

    def __init__(self, path: str, blobs: BlobStore) -> None:
        self.path = path
        self.blobs = blobs
        self._files = open_files(path, blobs)
        try:
            if self._files.exists("oci-layout") and self._files.exists("index.json"):
                entries = self._oci_entries()
            elif self._files.exists("manifest.json"):
                entries = self._docker_entries()
            else:
                raise LayerError(f"{path}: not a docker-save archive or OCI image layout (it has "
                                 "neither manifest.json nor oci-layout and index.json)")
            if not entries:
                raise LayerError(f"{path}: the archive holds no images")
            self.entries = _merged(entries)
        except BaseException:
            self._files.close()
            raise

    def __enter__(self) -> ImageArchive:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._files.close()

    def import_layers(self, entries: Iterable[ArchiveEntry],
                      snapshots: SnapshotStore | None = None,
                      unpacking: Unpacking | None = None) -> None:
        """Store the layers of `entries` that the blob store lacks, each read once. With
        `snapshots`, each is also unpacked into the snapshot of its (first) chain as it is read,
        where that is missing: the first build on the image need not read it again.
        `unpacking(diff_id, size)`, if given, is entered around the reading of each layer (size:
        its bytes in the archive) and gives the progress(entries unpacked, bytes read) to call."""
        wanted: dict[str, tuple[LayerLocation, str | None]] = {}
        for entry in entries:
            for diff_id, layer, chain_id in zip(entry.diff_ids, entry.layers,
                                                chain_ids(entry.diff_ids), strict=True):
                if not self.blobs.has(diff_id):
                    unpack = snapshots is not None and not os.path.isdir(snapshots.path(chain_id))
                    wanted.setdefault(diff_id, (layer, chain_id if unpack else None))
        if not wanted:
            return
        with ThreadPoolExecutor(min(len(wanted), os.cpu_count() or 1),
                                thread_name_prefix="layer") as pool:
            futures = [pool.submit(self._import_layer, diff_id, layer, snapshots, chain_id,
                                   unpacking)
                       for diff_id, (layer, chain_id) in wanted.items()]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                for future in futures:
                    future.cancel()
                raise

    def _import_layer(self, diff_id: str, layer: LayerLocation,
                      snapshots: SnapshotStore | None, chain_id: str | None,
                      unpacking: Unpacking | None) -> None:
        where = f"{self.path}: layer {layer.path}"
        with self._files.open(layer.path) as stream, \
                StreamedSnapshot(snapshots if chain_id else None, chain_id, diff_id) as snapshot, \
                (unpacking(diff_id, self._files.size(layer.path)) if unpacking
                 else nullcontext()) as report:
            raw = _CountingReader(stream, hashed=layer.digest not in (None, diff_id))
            progress = report and ReadProgress(report, lambda: raw.size)
            with self.blobs.temp() as (out, temp_path):
                uncompressed = hashlib.sha256()
                chunks = stored(decompressed(raw, where), out, uncompressed)
                snapshot.consume(progress.watched(chunks) if progress else chunks, progress)
                raw.drain()
                if progress:
                    progress.finish()
                if layer.size is not None and raw.size != layer.size:
                    raise LayerError(f"{where}: {raw.size} bytes, but its descriptor says "
                                     f"{layer.size}")
                if raw.hashed and raw.digest() != layer.digest:
                    raise LayerError(f"{where}: its content does not match its digest "
                                     f"{layer.digest}")
                found = "sha256:" + uncompressed.hexdigest()
                if found != diff_id:
                    raise LayerError(f"{where}: its uncompressed content has diff ID {found}, but "
                                     f"the image config lists {diff_id}: the archive is corrupt")
            self.blobs.commit(temp_path, diff_id)
            snapshot.commit()

    # -- the docker-save view ------------------------------------------------------------

    def _docker_entries(self) -> list[ArchiveEntry]:
        items = self._json("manifest.json")
        if not isinstance(items, list):
            raise LayerError(f"{self.path}: manifest.json is not a list of images")
        entries = []
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("Config"), str) \
                    or not isinstance(item.get("Layers"), list):
                raise LayerError(f"{self.path}: manifest.json has an entry without Config and "
                                 "Layers")
            config_path = item["Config"]
            config = self._read(config_path)
            diff_ids = self._diff_ids(config, config_path)
            if len(item["Layers"]) != len(diff_ids):
                raise LayerError(f"{self.path}: manifest.json lists {len(item['Layers'])} layers "
                                 f"for {config_path}, whose config lists {len(diff_ids)}")
            layers = tuple(LayerLocation(clean_name(path, self.path)) for path in item["Layers"])
            names = tuple(self._tag(text) for text in item.get("RepoTags") or ())
            entries.append(ArchiveEntry(config, diff_ids, layers, names))
        return entries

    def _tag(self, text: Any) -> Reference:
        try:
            if not isinstance(text, str):
                raise ValueError("not a string")
            ref = parse_reference(text)
        except ValueError as error:
            raise LayerError(f"{self.path}: manifest.json: invalid tag {text!r}: {error}") from None
        if ref.digest:
            raise LayerError(f"{self.path}: manifest.json: {text!r} is not a NAME:TAG tag")
        return ref

    # -- the OCI view --------------------------------------------------------------------

    def _oci_entries(self) -> list[ArchiveEntry]:
        layout = self._json("oci-layout")
        if not isinstance(layout, dict) or layout.get("imageLayoutVersion") != "1.0.0":
            raise LayerError(f"{self.path}: oci-layout is not imageLayoutVersion 1.0.0")
        index = self._json("index.json")
        manifests = index.get("manifests") if isinstance(index, dict) else None
        if not isinstance(manifests, list):
            raise LayerError(f"{self.path}: index.json has no manifests list")
        entries = []
        for descriptor in manifests:
            entry = self._oci_entry(descriptor)
            if entry is not None:
                entries.append(entry)
        return entries

    def _oci_entry(self, descriptor: Any) -> ArchiveEntry | None:
        """The image a top-level descriptor names, None for an artifact that is not an image."""
        digest, manifest = self._image_manifest(descriptor, 0)
        if manifest is None:
            return None
        config_descriptor = manifest.get("config")
        layer_descriptors = manifest.get("layers") or []
        if not isinstance(config_descriptor, dict) or not isinstance(layer_descriptors, list):
            raise LayerError(f"{self.path}: manifest {digest} has no config or layers")
        if config_descriptor.get("mediaType") not in (OCI_CONFIG, _DOCKER_CONFIG):
            return None
        config = self._blob(config_descriptor)
        diff_ids = self._diff_ids(config, config_descriptor["digest"])
        if len(layer_descriptors) != len(diff_ids):
            raise LayerError(f"{self.path}: manifest {digest} lists {len(layer_descriptors)} "
                             f"layers, its config {len(diff_ids)}")
        layers = []
        for layer in layer_descriptors:
            _check_descriptor(layer, self.path)
            layers.append(LayerLocation(_blob_path(layer["digest"]), layer["digest"],
                                        layer["size"]))
        annotations = descriptor.get("annotations") or {}
        names, ref_names = self._names(annotations)
        digests = tuple(dict.fromkeys((descriptor["digest"], digest)))
        return ArchiveEntry(config, diff_ids, tuple(layers), names, ref_names, digests)

    def _image_manifest(self, descriptor: Any, depth: int) -> tuple[str, dict | None]:
        """The image manifest a descriptor leads to, through indexes (choosing the host's
        platform); None for a manifest of something else."""
        document = self._document(descriptor)
        digest = descriptor["digest"]
        media_type = descriptor.get("mediaType") or document.get("mediaType")
        if media_type in (OCI_INDEX, _DOCKER_LIST) or "manifests" in document:
            if depth == _MAX_NESTING:
                raise LayerError(f"{self.path}: indexes nested more than {_MAX_NESTING} deep")
            return self._image_manifest(self._platform_child(document, digest), depth + 1)
        if media_type in (OCI_MANIFEST, _DOCKER_MANIFEST) or "layers" in document:
            return digest, document
        return digest, None

    def _platform_child(self, index: dict, digest: str) -> dict:
        host = host_platform()
        children = index.get("manifests")
        if not isinstance(children, list):
            raise LayerError(f"{self.path}: index {digest} has no manifests list")
        offered = []
        for child in children:
            platform = child.get("platform") if isinstance(child, dict) else None
            if isinstance(platform, dict):
                if host.matches(platform):
                    return child
                offered.append("/".join(filter(None, (platform.get("os"),
                                                      platform.get("architecture"),
                                                      platform.get("variant")))))
        raise LayerError(f"{self.path}: index {digest} has no image for {host} (it has: "
                         f"{', '.join(offered) or 'no platforms'})")

    def _names(self, annotations: Any) -> tuple[tuple[Reference, ...], tuple[str, ...]]:
        """Tags from an index entry's annotations. A `ref.name` with no `/` or `:` is only a tag
        (`1.36`, as skopeo writes it) and names no image by itself."""
        if not isinstance(annotations, dict):
            return (), ()
        ref_name = annotations.get(_REF_NAME)
        ref_names = (ref_name,) if isinstance(ref_name, str) else ()
        name = annotations.get(_CONTAINERD_NAME)
        if not isinstance(name, str) and ref_names and re.search("[/:]", ref_name):
            name = ref_name
        if not isinstance(name, str):
            return (), ref_names
        try:
            ref = parse_reference(name)
        except ValueError as error:
            raise LayerError(f"{self.path}: index.json: invalid image name {name!r}: "
                             f"{error}") from None
        if not ref.tag:
            return (), ref_names
        return (Reference(ref.registry, ref.repository, ref.tag),), ref_names

    # -- reading ---------------------------------------------------------------------------

    def _read(self, name: str) -> bytes:
        """A small file: JSON, a config. A huge one is refused, not read into memory."""
        with self._files.open(clean_name(name, self.path)) as stream:
            data = stream.read(_MAX_DOCUMENT + 1)
        if len(data) > _MAX_DOCUMENT:
            raise LayerError(f"{self.path}: {name} is larger than {_MAX_DOCUMENT} bytes")
        return data

    def _json(self, name: str) -> Any:
        try:
            return json.loads(self._read(name))
        except (ValueError, RecursionError) as error:  # RecursionError: nested too deep
            raise LayerError(f"{self.path}: {name} is not valid JSON: {error}") from None

    def _blob(self, descriptor: Any) -> bytes:
        """A small blob (manifest, index, config), checked against its descriptor."""
        _check_descriptor(descriptor, self.path)
        digest, size = descriptor["digest"], descriptor["size"]
        data = self._read(_blob_path(digest))
        if len(data) != size or sha256_digest(data) != digest:
            raise LayerError(f"{self.path}: blob {digest} does not match its descriptor "
                             f"(digest, and size {size}; it has {len(data)} bytes)")
        return data

    def _document(self, descriptor: Any) -> dict:
        data = self._blob(descriptor)
        try:
            document = json.loads(data)
        except (ValueError, RecursionError) as error:
            raise LayerError(f"{self.path}: manifest {descriptor['digest']} is not valid JSON: "
                             f"{error}") from None
        if not isinstance(document, dict):
            raise LayerError(f"{self.path}: manifest {descriptor['digest']} is not a JSON object")
        return document

    def _diff_ids(self, config: bytes, name: str) -> tuple[str, ...]:
        try:
            return parse_config(config).diff_ids
        except ValueError as error:
            raise LayerError(f"{self.path}: config {name}: {error}") from None


def _merged(entries: list[ArchiveEntry]) -> tuple[ArchiveEntry, ...]:
    """One entry per image: an image listed once per tag becomes one entry with all its names."""
    by_id: dict[str, ArchiveEntry] = {}
    for entry in entries:
        seen = by_id.get(entry.image_id)
        if seen is None:
            by_id[entry.image_id] = entry
            continue
        by_id[entry.image_id] = ArchiveEntry(
            seen.config, seen.diff_ids, seen.layers,
            tuple(dict.fromkeys(seen.names + entry.names)),
            tuple(dict.fromkeys(seen.ref_names + entry.ref_names)),
            tuple(dict.fromkeys(seen.digests + entry.digests)))
    return tuple(by_id.values())


def _check_descriptor(descriptor: Any, path: str) -> None:
    if not isinstance(descriptor, dict) or not isinstance(descriptor.get("digest"), str) \
            or not isinstance(descriptor.get("size"), int) or descriptor["size"] < 0:
        raise LayerError(f"{path}: a descriptor lacks a digest or size: {descriptor!r}")
    if not is_digest(descriptor["digest"]):
        raise LayerError(f"{path}: unsupported digest {descriptor['digest']!r} (only sha256)")


def _blob_path(digest: str) -> str:
    return "blobs/sha256/" + digest.partition(":")[2]


class _CountingReader(io.RawIOBase):
    """Passes a stream through, counting its bytes and, when asked, hashing them: the digest of
    a compressed layer costs no second read."""

    def __init__(self, stream: BinaryIO, hashed: bool) -> None:
        self._stream = stream
        self._hash = hashlib.sha256() if hashed else None
        self.size = 0

    @property
    def hashed(self) -> bool:
        return self._hash is not None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:
        count = self._stream.readinto(buffer)
        if self._hash is not None:
            self._hash.update(memoryview(buffer)[:count])
        self.size += count
        return count

    def drain(self) -> None:
        """Read what the decompressor left (trailing frames, padding), so the count and digest
        cover every byte."""
        buffer = bytearray(CHUNK)
        while self.readinto(buffer):
            continue

    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()
