"""Small images made in a test's own blob store, and archives of them, for the image store, the
archive reader and the CLI verbs: layers are written by pybuild's tar writer, archives by
pybuild's archive writer, so nothing is downloaded."""
from __future__ import annotations

import posixpath
from pathlib import Path

from builder.output.tarball import layer_blobs
from layers.archive import ArchiveImage, write_archive
from layers.blobstore import BlobStore
from layers.compression import Compression
from layers.image import ContainerConfig, History, ImageConfig, parse_config
from layers.reference import parse_reference
from layers.tarwriter import Entry, Kind, LayerWriter


def make_layer(blobs: BlobStore, files: dict[str, bytes]) -> str:
    """A layer holding `files` (and their parent directories); returns its diff ID."""
    with blobs.temp() as (handle, temp_path):
        writer = LayerWriter(handle)
        written: set[str] = set()
        for path in sorted(files):
            parent = posixpath.dirname(path)
            parents = []
            while parent and parent not in written:
                parents.append(parent)
                parent = posixpath.dirname(parent)
            for directory in reversed(parents):
                writer.add(Entry(directory, Kind.DIR, 0o755))
                written.add(directory)
            writer.add(Entry(path, Kind.FILE, 0o644, size=len(files[path])), files[path])
        digest = writer.finish()
    blobs.commit(temp_path, digest.diff_id)
    return digest.diff_id


def make_image(blobs: BlobStore, *layers: dict[str, bytes], cmd: str = "sh") -> bytes:
    """The config of an image of `layers` (stored in `blobs`); `cmd` makes images distinct."""
    diff_ids = tuple(make_layer(blobs, files) for files in layers)
    history = tuple(History(f"layer {i}", "2024-01-01T00:00:00Z") for i in range(len(layers)))
    return ImageConfig(config=ContainerConfig(cmd=(cmd,)), diff_ids=diff_ids, history=history,
                       created="2024-01-01T00:00:00Z").to_bytes()


def write_tarball(path: Path, blobs: BlobStore, config: bytes, tags: tuple[str, ...] = (),
                  compression: Compression = Compression.NONE) -> str:
    """pybuild's own output format (docker-save + OCI layout); returns the manifest digest."""
    layers = layer_blobs(blobs, parse_config(config), compression)
    with open(path, "wb") as out:
        return write_archive(out, ArchiveImage(config, layers,
                                               tuple(parse_reference(t) for t in tags)))
