"""The local image store: images added by `pybuild load`, found again by FROM, named by the
fully qualified references Docker normalises to (`busybox:1.36` is
`docker.io/library/busybox:1.36`).

On disk, under the cache root, beside the blob store it shares with the builds:

    images/index.json   {"version": 1,
                         "images": {<manifest digest>: {"config": <config digest>,
                                                        "digests": [<manifest digests the image
                                                                     was known by in archives>]}},
                         "tags": {<full reference>: <manifest digest>}}
    images/index.lock   the flock(2) that serialises writers
    blobs/sha256/<hex>  configs (their exact bytes: the image ID is their digest), manifests, and
                        layers, uncompressed, named by diff ID

An image's manifest is the one pybuild writes for an uncompressed tarball of it, so every blob it
names is in the blob store and its digest identifies the image. Readers never lock: the index is
replaced by rename, so they see the old index or the new one, whole. Writers take the lock, read
the index afresh, change it, and write it to a temp file that is fsynced and renamed: concurrent
loads never lose each other's tags, and a crash leaves the previous index.
"""
from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from layers.archive import ArchiveImage, manifest_of
from layers.blobstore import BlobStore
from layers.compression import Compression
from layers.errors import LayerError
from layers.image import ImageConfig, parse_config, sha256_digest
from layers.layerblob import stored_blob
from layers.reference import Reference, parse_reference
from layers.scratch import private_dir

_VERSION = 1


@dataclass(frozen=True)
class StoredImage:
    """One image of the store, as reached through `ref` (None: an image without tags)."""

    ref: Reference | None
    manifest_digest: str
    config_bytes: bytes
    config: ImageConfig

    @property
    def image_id(self) -> str:
        """What `docker images` shows: the config's digest."""
        return sha256_digest(self.config_bytes)

    @property
    def diff_ids(self) -> tuple[str, ...]:
        return self.config.diff_ids


class ImageStore:
    """The image index of one cache root."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.blobs = BlobStore(root)
        self.dir = os.path.join(root, "images")
        os.makedirs(self.dir, exist_ok=True)
        self.index_path = os.path.join(self.dir, "index.json")

    def put(self, config: bytes, refs: Iterable[Reference] = (),
            digests: Iterable[str] = ()) -> str:
        """Add an image whose layers are already in the blob store, tagged `refs` (a tag that named
        another image moves here; that image stays, untagged, as with `docker load`). `digests` are
        manifest digests the image is also known by (`FROM name@sha256:...` finds it by them).
        Returns the image's manifest digest."""
        image = _parse_config(config)
        layers = []
        for diff_id in image.diff_ids:
            if not self.blobs.has(diff_id):
                raise LayerError(f"cannot store the image: its layer {diff_id} is not in the blob "
                                 "store")
            layers.append(stored_blob(self.blobs.path(diff_id), diff_id,
                                      Compression.NONE.media_type))
        config_digest = self.blobs.put_bytes(config)
        manifest_digest = self.blobs.put_bytes(manifest_of(ArchiveImage(config, tuple(layers), ())))
        with self._update() as index:
            entry = index["images"].setdefault(manifest_digest, {"config": config_digest,
                                                                 "digests": []})
            entry["digests"] = sorted((set(entry["digests"]) | set(digests)) - {manifest_digest})
            for ref in refs:
                index["tags"][_key(ref)] = manifest_digest
        return manifest_digest

    def get(self, ref: Reference) -> StoredImage | None:
        """The image a reference names: by digest when it has one (the tag is then ignored, as
        Docker does), else by tag."""
        index = self._read()
        if ref.digest:
            for manifest_digest, entry in index["images"].items():
                if ref.digest == manifest_digest or ref.digest in entry["digests"]:
                    return self._image(ref, manifest_digest, entry)
            return None
        manifest_digest = index["tags"].get(_key(ref))
        if manifest_digest is None:
            return None
        return self._image(ref, manifest_digest, index["images"][manifest_digest])

    def list(self) -> list[StoredImage]:
        """Every tag, and every image that has none (ref None), sorted by name."""
        index = self._read()
        tagged: dict[str, list[Reference]] = {}
        for key, manifest_digest in sorted(index["tags"].items()):
            tagged.setdefault(manifest_digest, []).append(parse_reference(key))
        images = []
        for manifest_digest, entry in index["images"].items():
            for ref in tagged.get(manifest_digest, [None]):
                images.append(self._image(ref, manifest_digest, entry))
        return sorted(images, key=lambda image: (image.ref is None, image.ref and image.ref.full()))

    def remove(self, ref: Reference) -> StoredImage | None:
        """Untag `ref`; an image left without tags leaves the store (`docker rmi`). Returns what
        the tag named, None if nothing. Blobs stay: other images may share them."""
        with self._update() as index:
            manifest_digest = index["tags"].pop(_key(ref), None)
            if manifest_digest is None:
                return None
            entry = index["images"][manifest_digest]
            if manifest_digest not in index["tags"].values():
                del index["images"][manifest_digest]
        return self._image(ref, manifest_digest, entry)

    def delete(self, manifest_digest: str) -> list[Reference]:
        """Remove an image and all its tags; returns the tags it had."""
        with self._update() as index:
            if index["images"].pop(manifest_digest, None) is None:
                return []
            keys = [key for key, value in index["tags"].items() if value == manifest_digest]
            for key in keys:
                del index["tags"][key]
        return [parse_reference(key) for key in sorted(keys)]

    def _image(self, ref: Reference | None, manifest_digest: str,
               entry: dict[str, Any]) -> StoredImage:
        try:
            config = self.blobs.read_bytes(entry["config"])
        except FileNotFoundError:
            raise LayerError(f"the image store's config blob {entry['config']} is missing from "
                             f"{self.blobs.dir}: load the image again") from None
        return StoredImage(ref, manifest_digest, config, _parse_config(config))

    def _read(self) -> dict[str, Any]:
        try:
            with open(self.index_path, "rb") as handle:
                index = json.load(handle)
        except FileNotFoundError:
            return {"version": _VERSION, "images": {}, "tags": {}}
        except ValueError as error:
            raise LayerError(f"the image store index {self.index_path} is not valid JSON "
                             f"({error}); remove it to start an empty store") from None
        if not isinstance(index, dict) or index.get("version") != _VERSION:
            raise LayerError(f"the image store index {self.index_path} is not version "
                             f"{_VERSION}; remove it to start an empty store")
        return index

    @contextmanager
    def _update(self) -> Iterator[dict[str, Any]]:
        """The index, read under the writers' lock and written back atomically on success, if
        it changed (a rebuild that tags the same image again writes nothing, fsyncs nothing)."""
        lock = os.open(os.path.join(self.dir, "index.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                       0o644)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            index = self._read()
            before = json.dumps(index, sort_keys=True)
            yield index
            if json.dumps(index, sort_keys=True) == before and os.path.exists(self.index_path):
                return
            fd, temp_path = tempfile.mkstemp(dir=private_dir(self.root), prefix="index-")
            try:
                with os.fdopen(fd, "w") as handle:
                    json.dump(index, handle, indent=1, sort_keys=True)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.chmod(temp_path, 0o644)
                os.replace(temp_path, self.index_path)
            except BaseException:
                os.unlink(temp_path)
                raise
        finally:
            os.close(lock)


def _key(ref: Reference) -> str:
    """A tag's key in the index: its full reference, without any digest."""
    if not ref.tag:
        raise ValueError(f"{ref.full()} has no tag to store the image under")
    return Reference(ref.registry, ref.repository, ref.tag).full()


def _parse_config(config: bytes) -> ImageConfig:
    try:
        return parse_config(config)
    except ValueError as error:
        raise LayerError(str(error)) from None
