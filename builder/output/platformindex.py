"""The tarball of a multi-platform build (`--platform a,b`): the per-platform tarballs merged into
one, whose index.json names an OCI image index of every platform's manifest (as BuildKit's oci
exporter writes it; skopeo, containerd and podman choose from it by platform). manifest.json, the
view of `docker load` before Docker 25, lists every platform's image but gives the tags only to
the host's (or else the first platform's): Docker 20.10 loads each image and one image per tag."""
from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Sequence

from builder.output.atomicfile import replacing
from layers.image import OCI_INDEX, Descriptor, dumps, index_bytes, sha256_digest
from layers.platform import Platform, host_platform

# The annotations of index.json that name an image (its tags).
_NAMES = ("io.containerd.image.name", "org.opencontainers.image.ref.name")


def _platform_of(config: dict) -> tuple[tuple[str, str], ...]:
    return tuple((key, config[key]) for key in ("architecture", "os", "variant") if config.get(key))


def _children(archive: tarfile.TarFile, top: dict) -> list[Descriptor]:
    """The manifests one platform's index.json entry stands for: its image manifest with its
    platform, and (when it is an index of an image and its attestations) those too."""
    def read(digest: str) -> dict:
        return json.load(archive.extractfile("blobs/sha256/" + digest.partition(":")[2]))
    if top["mediaType"] == OCI_INDEX:
        entries = read(top["digest"])["manifests"]
    else:
        entries = [top]
    children = []
    for entry in entries:
        platform = tuple(entry.get("platform", {}).items()) or _platform_of(
            read(read(entry["digest"])["config"]["digest"]))
        annotations = tuple((k, v) for k, v in entry.get("annotations", {}).items()
                            if k not in _NAMES)
        children.append(Descriptor(entry["mediaType"], entry["digest"], entry["size"],
                                   annotations, platform))
    return children


def combine(parts: Sequence[tuple[Platform, str]], destination: str) -> str:
    """Write the tarball of every platform's tarball in `parts`; returns the index's digest."""
    host = next((i for i, (p, _) in enumerate(parts) if p.architecture ==
                 host_platform().architecture), 0)
    blobs: dict[str, tarfile.TarInfo] = {}
    sources: dict[str, str] = {}
    docker_manifest: list[dict] = []
    children: list[Descriptor] = []
    names: list[tuple[tuple[str, str], ...]] = [()]
    repositories = b""
    for position, (_, path) in enumerate(parts):
        with tarfile.open(path) as archive:
            index = json.load(archive.extractfile("index.json"))
            top = index["manifests"][0]
            children += _children(archive, top)
            for entry in json.load(archive.extractfile("manifest.json")):
                docker_manifest.append(entry | ({} if position == host else {"RepoTags": []}))
            if position == host:
                names = [tuple((k, v) for k, v in entry.get("annotations", {}).items()
                               if k in _NAMES) for entry in index["manifests"]]
                if "repositories" in archive.getnames():
                    repositories = archive.extractfile("repositories").read()
            for member in archive.getmembers():
                if member.isfile() and member.name.startswith("blobs/sha256/"):
                    blobs.setdefault(member.name, member)
                    sources.setdefault(member.name, path)
    nested = index_bytes(children)
    digest = sha256_digest(nested)
    tops = [Descriptor(OCI_INDEX, digest, len(nested), name) for name in names]
    with replacing(destination) as out, tarfile.open(fileobj=out, mode="w",
                                                     format=tarfile.PAX_FORMAT) as writer:
        for directory in ("blobs/", "blobs/sha256/"):
            writer.addfile(_info(directory, 0, tarfile.DIRTYPE))
        for name in sorted(blobs):
            with tarfile.open(sources[name]) as archive:
                writer.addfile(blobs[name], archive.extractfile(name))
        files = [("blobs/sha256/" + digest.partition(":")[2], nested),
                 ("index.json", index_bytes(tops)), ("manifest.json", dumps(docker_manifest)),
                 ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')]
        if repositories:
            files.append(("repositories", repositories))
        for name, data in files:
            writer.addfile(_info(name, len(data)), io.BytesIO(data))
    return digest


def _info(name: str, size: int, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.mode = size, kind, 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info
