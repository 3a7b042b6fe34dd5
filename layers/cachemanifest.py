"""The exported build cache, as an OCI image manifest any registry or OCI layout holds.

Its config blob (media type `application/vnd.pybuild.cache.v1+json`) lists the step records of
the build that exported it, `{"format": 1, "records": [{"key", "parent", "inputs", "state"}],
"manifests": {digest: rows}}` (`inputs` are the named inputs of the key and `manifests` the
source lists of its COPY steps, so an importer that must run a step can still say which input or
file differs; `state` is the stage state after the step, as the cache index keeps it);
its layers are every layer those states name, compressed, each annotated with its diff ID, so an
importer knows which blob to fetch for a layer of a hit, and fetches nothing else.

With cache mounts exported (`--cache-to ...,mounts=true`) the config also has `"mounts": [{"id",
"diff_id", "size"}]`: each a directory's files as one more layer of the manifest (so a registry
keeps its blob), `size` the bytes of its files. Readers that do not know `mounts` see only an
extra layer no record names, which they never fetch.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from layers import image
from layers.image import Descriptor, dumps, is_digest, sha256_digest

CONFIG_MEDIA_TYPE = "application/vnd.pybuild.cache.v1+json"
DIFF_ID = "org.pybuild.layer.diff_id"
_FORMAT = 1


@dataclass(frozen=True)
class CacheLayer:
    """A layer of the exported cache: its compressed blob, and what it decompresses to."""

    diff_id: str
    digest: str
    size: int
    media_type: str


@dataclass(frozen=True)
class CacheRecord:
    """One step: its key, its parent's key, the named inputs of the key, and the state after."""

    key: str
    parent: str
    inputs: tuple[tuple[str, str], ...]
    state: dict


@dataclass(frozen=True)
class MountBlob:
    """A cache mount's files as a layer: the mount's id, the diff ID of its tar, and the bytes
    of its files."""

    id: str
    diff_id: str
    size: int


@dataclass(frozen=True)
class ExportedCache:
    records: tuple[CacheRecord, ...]
    layers: tuple[CacheLayer, ...]
    manifests: dict[str, list]
    mounts: tuple[MountBlob, ...] = ()


def config_bytes(records: tuple[CacheRecord, ...], manifests: dict[str, list],
                 mounts: tuple[MountBlob, ...] = ()) -> bytes:
    body = {"format": _FORMAT, "records": [
        {"key": r.key, "parent": r.parent, "inputs": [list(i) for i in r.inputs],
         "state": r.state} for r in records], "manifests": manifests}
    if mounts:
        body["mounts"] = [{"id": m.id, "diff_id": m.diff_id, "size": m.size} for m in mounts]
    return dumps(body)


def manifest_bytes(config: bytes, layers: tuple[CacheLayer, ...]) -> bytes:
    return image.manifest_bytes(
        Descriptor(CONFIG_MEDIA_TYPE, sha256_digest(config), len(config)),
        [Descriptor(layer.media_type, layer.digest, layer.size, ((DIFF_ID, layer.diff_id),))
         for layer in layers])


def parse(manifest: bytes, config: bytes) -> ExportedCache:
    """Read an exported cache back. Raises ValueError when it is not one this version reads."""
    try:
        body = json.loads(manifest)
        settings = json.loads(config)
        if body.get("config", {}).get("mediaType") != CONFIG_MEDIA_TYPE:
            raise ValueError("it is not a pybuild cache (its config is "
                             f"{body.get('config', {}).get('mediaType')!r})")
        if settings.get("format") != _FORMAT:
            raise ValueError(f"cache format {settings.get('format')!r}, this pybuild reads "
                             f"{_FORMAT}")
        layers = tuple(CacheLayer(layer["annotations"][DIFF_ID], layer["digest"], layer["size"],
                                  layer["mediaType"]) for layer in body["layers"])
        records = tuple(CacheRecord(r["key"], r["parent"],
                                    tuple((name, value) for name, value in r["inputs"]),
                                    r["state"]) for r in settings["records"])
        manifests = dict(settings.get("manifests", {}))
        mounts = tuple(MountBlob(m["id"], m["diff_id"], m["size"])
                       for m in settings.get("mounts", ()))
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ValueError(f"a damaged cache manifest ({error})") from None
    for layer in layers:
        if not (is_digest(layer.diff_id) and is_digest(layer.digest)):
            raise ValueError(f"a damaged cache manifest (layer {layer.digest!r})")
    named = {layer.diff_id for layer in layers}
    for mount in mounts:
        if not (isinstance(mount.id, str) and mount.id and mount.diff_id in named
                and isinstance(mount.size, int) and mount.size >= 0):
            raise ValueError(f"a damaged cache manifest (cache mount {mount.id!r})")
    return ExportedCache(records, layers, manifests, mounts)
