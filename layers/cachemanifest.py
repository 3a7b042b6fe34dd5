"""The exported build cache, as an OCI image manifest any registry or OCI layout holds.

Its config blob (media type `application/vnd.pybuild.cache.v1+json`) lists the step records of
the build that exported it, `{"format": 1, "records": [{"key", "parent", "inputs", "state"}],
"manifests": {digest: rows}}` (`inputs` are the named inputs of the key and `manifests` the
source lists of its COPY steps, so an importer that must run a step can still say which input or
file differs; `state` is the stage state after the step, as the cache index keeps it);
its layers are every layer those states name, compressed, each annotated with its diff ID, so an
importer knows which blob to fetch for a layer of a hit, and fetches nothing else.
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
class ExportedCache:
    records: tuple[CacheRecord, ...]
    layers: tuple[CacheLayer, ...]
    manifests: dict[str, list]


def config_bytes(records: tuple[CacheRecord, ...], manifests: dict[str, list]) -> bytes:
    return dumps({"format": _FORMAT, "records": [
        {"key": r.key, "parent": r.parent, "inputs": [list(i) for i in r.inputs],
         "state": r.state} for r in records], "manifests": manifests})


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
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ValueError(f"a damaged cache manifest ({error})") from None
    for layer in layers:
        if not (is_digest(layer.diff_id) and is_digest(layer.digest)):
            raise ValueError(f"a damaged cache manifest (layer {layer.digest!r})")
    return ExportedCache(records, layers, manifests)
