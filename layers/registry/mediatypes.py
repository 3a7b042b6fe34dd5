"""The media types a registry speaks, OCI and Docker schema2 (formats.md section 3), and which
compression a layer media type announces."""
from __future__ import annotations

from layers.compression import Compression
from layers.image import OCI_CONFIG, OCI_INDEX, OCI_MANIFEST

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v1+prettyjws")

INDEXES = (OCI_INDEX, DOCKER_LIST)
MANIFESTS = (OCI_MANIFEST, DOCKER_MANIFEST)
# The manifest and config types of each family, for a push.
FAMILIES = {"oci": (OCI_MANIFEST, OCI_CONFIG), "docker": (DOCKER_MANIFEST, DOCKER_CONFIG)}


def layer_compression(media_type: str) -> Compression | None:
    """What a layer media type says its bytes are; None for a type that is not a layer tar.
    Suffixes rather than a list, so Docker's, OCI's, containerd's `…diff.tar.zstd` and the
    deprecated non-distributable and foreign types are all understood."""
    if "layer" not in media_type and "rootfs" not in media_type:
        return None
    if media_type.endswith(("+gzip", ".gzip")):
        return Compression.GZIP
    if media_type.endswith(("+zstd", ".zstd")):
        return Compression.ZSTD
    if media_type.endswith(".tar"):
        return Compression.NONE
    return None


def layer_media_type(media_type: str, family: str) -> str:
    """`media_type` restated in the manifest family being pushed, so a manifest never mixes
    them; ValueError for zstd in a Docker manifest, which has no type for it."""
    compression = layer_compression(media_type)
    if compression is None:
        raise ValueError(f"{media_type!r} is not a layer media type")
    restated = compression.media_type if family == "oci" else compression.docker_media_type
    if restated is None:
        raise ValueError("zstd layers need OCI media types (Docker manifests cannot list them)")
    return restated
