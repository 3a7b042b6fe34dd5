"""One tarball that is both a `docker save` archive and an OCI image layout.

`docker load` before Docker 25 reads only `manifest.json`; the containerd store, podman and skopeo
read `oci-layout` + `index.json`. Both views point at the same `blobs/sha256/<hex>` files, so the
layers are written once. `-o type=oci` writes the OCI layout alone, as buildx does: no
`manifest.json`, and the manifest's descriptor in `index.json` annotated with its creation time.
Layer bodies are copied from the blob store by the kernel (`os.sendfile`), never through Python
buffers.
"""
from __future__ import annotations

import dataclasses
import json
import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from layers.image import (OCI_INDEX, Annotations, Descriptor, dumps, index_bytes, manifest_bytes,
                          sha256_digest)
from layers.layerblob import LayerBlob
from layers.reference import Reference
from layers.registry.mediatypes import FAMILIES, layer_media_type

_CHUNK = 1 << 24


@dataclass(frozen=True)
class ArchiveImage:
    config: bytes
    layers: tuple[LayerBlob, ...]
    tags: tuple[Reference, ...]
    media_types: str = "oci"  # the manifest's family: "oci" or "docker" (layers/registry)
    annotations: Annotations = Annotations()
    attached: tuple["Attached", ...] = ()


@dataclass(frozen=True)
class Attached:
    """A manifest the index lists after the image's (an attestation manifest): its descriptor
    there and the blobs it names. `docker load` reads manifest.json, which never lists it."""

    descriptor: Descriptor
    manifest: bytes
    blobs: tuple[bytes, ...]


def manifest_of(image: ArchiveImage) -> bytes:
    """The image's manifest; ValueError for zstd layers or annotations in a Docker manifest."""
    manifest_type, config_type = FAMILIES[image.media_types]
    if image.annotations.manifest and image.media_types != "oci":
        raise ValueError("manifest annotations need OCI media types (oci-mediatypes=true)")
    config = Descriptor(config_type, sha256_digest(image.config), len(image.config))
    return manifest_bytes(config, [Descriptor(layer_media_type(l.media_type, image.media_types),
                                              l.digest, l.size) for l in image.layers],
                          manifest_type, image.annotations.manifest)


def attached_index(image: Descriptor, config: bytes, attached: tuple[Attached, ...]) -> bytes:
    """The image index BuildKit makes for an image with attestations: the image manifest (with
    its platform, which tools choose by) and the attached manifests."""
    data = json.loads(config)
    platform = tuple((key, data[key]) for key in ("architecture", "os", "variant")
                     if data.get(key))
    return index_bytes([dataclasses.replace(image, platform=platform)]
                       + [a.descriptor for a in attached])


class LayerEntries:
    """The head of an archive: its `blobs/` directories, then layer blobs one by one. Made and
    fed before the image is known (builder/output/earlytar.py writes the layers of a build's
    last stage while it still runs); `write_archive` goes on from where it stopped."""

    def __init__(self, out: BinaryIO) -> None:
        self.writer = _ArchiveWriter(out, 0, None)
        self.written: dict[str, int] = {}  # digest -> size, in the order written
        self.writer.directory("blobs/")
        self.writer.directory("blobs/sha256/")

    def add(self, layer: LayerBlob) -> None:
        if layer.digest not in self.written:
            self.writer.file(_blob_name(layer.digest), layer)
            self.written[layer.digest] = layer.size

    def fits(self, digests: list[str]) -> bool:
        """Whether what is written begins the archive of an image with these layers."""
        return list(self.written) == digests[:len(self.written)]


def write_archive(out: BinaryIO, image: ArchiveImage,
                  progress: Callable[[int, int], None] | None = None, *,
                  oci_created: str | None = None, head: LayerEntries | None = None) -> str:
    """Write the archive to `out` (a file or pipe with a fileno); returns the manifest digest.
    `progress` hears the layer bytes written so far and their total, after every chunk. With
    `oci_created` (an RFC 3339 time) it is an OCI layout only, as `-o type=oci` writes it. With
    attached manifests, index.json names an image index of them and the image's, as BuildKit's
    exporters write it (manifest.json, which `docker load` of Docker 20.10 reads, names the
    image alone). `head`: what `out` already holds, every layer in it one of the image's. The
    layers come first, in the image's order, whether or not a head was written early: the same
    image makes the same bytes."""
    manifest = manifest_of(image)
    manifest_digest = sha256_digest(manifest)
    config_digest = sha256_digest(image.config)
    manifest_type = FAMILIES[image.media_types][0]
    created = ((("org.opencontainers.image.created", oci_created),) if oci_created else ()) \
        + image.annotations.descriptor
    top = Descriptor(manifest_type, manifest_digest, len(manifest))
    nested = b""
    if image.attached:
        nested = attached_index(top, image.config, image.attached)
        top = Descriptor(OCI_INDEX, sha256_digest(nested), len(nested))
    descriptors = [Descriptor(top.media_type, top.digest, top.size, created + (
                              ("io.containerd.image.name", tag.full()),
                              ("org.opencontainers.image.ref.name", tag.tag or "latest")))
                   for tag in image.tags] or [Descriptor(top.media_type, top.digest, top.size,
                                                         created)]
    docker_manifest = [{"Config": _blob_name(config_digest),
                        "RepoTags": [tag.familiar() for tag in image.tags],
                        "Layers": [_blob_name(layer.digest) for layer in image.layers]}]
    layers = {layer.digest: layer for layer in image.layers}  # each blob once
    head = head or LayerEntries(out)
    if not head.fits(list(layers)):
        raise ValueError("the archive's head holds layers the image does not begin with")
    writer = head.writer
    writer.total, writer.progress = sum(layer.size for layer in layers.values()), progress
    writer.sent = sum(head.written.values())
    if progress is not None and writer.sent:
        progress(writer.sent, writer.total)  # what the head holds: the bar starts there
    for layer in layers.values():
        head.add(layer)
    writer.data(_blob_name(config_digest), image.config)
    writer.data(_blob_name(manifest_digest), manifest)
    for attached in image.attached:
        for blob in attached.blobs:
            writer.data(_blob_name(sha256_digest(blob)), blob)
        writer.data(_blob_name(attached.descriptor.digest), attached.manifest)
    if nested:
        writer.data(_blob_name(top.digest), nested)
    writer.data("index.json", index_bytes(descriptors, image.annotations.index))
    if not oci_created:
        writer.data("manifest.json", dumps(docker_manifest))
    writer.data("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    if image.layers and image.tags and not oci_created:
        top = image.layers[-1].digest.partition(":")[2]
        repositories: dict[str, dict[str, str]] = {}
        for tag in image.tags:
            repositories.setdefault(tag.familiar_name(), {})[tag.tag or "latest"] = top
        writer.data("repositories", json.dumps(repositories).encode())
    writer.finish()
    return manifest_digest



def _blob_name(digest: str) -> str:
    return "blobs/sha256/" + digest.partition(":")[2]


class _ArchiveWriter:
    """A few large entries: headers from tarfile (cheap at this count), bodies by sendfile."""

    def __init__(self, out: BinaryIO, total: int,
                 progress: Callable[[int, int], None] | None) -> None:
        self.out = out
        self.fd = out.fileno()
        self.total = total
        self.progress = progress
        self.sent = 0

    def _header(self, name: str, size: int, kind: bytes, mode: int) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.type, info.mode, info.mtime = size, kind, mode, 0
        self.out.write(info.tobuf(format=tarfile.PAX_FORMAT))

    def directory(self, name: str) -> None:
        self._header(name, 0, tarfile.DIRTYPE, 0o755)

    def data(self, name: str, data: bytes) -> None:
        self._header(name, len(data), tarfile.REGTYPE, 0o644)
        self.out.write(data + bytes(-len(data) % 512))

    def file(self, name: str, layer: LayerBlob) -> None:
        size = layer.size
        self._header(name, size, tarfile.REGTYPE, 0o644)
        self.out.flush()
        with layer.open() as source:
            offset = 0
            while offset < size:
                sent = os.sendfile(self.fd, source.fileno(), offset, min(_CHUNK, size - offset))
                if sent == 0:
                    raise OSError(f"blob {layer.digest} ended after {offset} of {size} bytes")
                offset += sent
                self.sent += sent
                if self.progress is not None:
                    self.progress(self.sent, self.total)
        self.out.write(bytes(-size % 512))

    def finish(self) -> None:
        self.out.write(bytes(1024))
        self.out.flush()

