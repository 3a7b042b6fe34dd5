"""In-toto attestations attached to an image as BuildKit stores them
(docs.docker.com/build/metadata/attestations/attestation-storage): one OCI manifest per image
manifest, whose layers are in-toto statements (`application/vnd.in-toto+json`, each annotated
with its predicate type) and whose config is a placeholder image config; the index lists it
with platform unknown/unknown and `vnd.docker.reference.type: attestation-manifest`,
`vnd.docker.reference.digest: <the image manifest's digest>`."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from layers.archive import ArchiveImage, Attached, manifest_of
from layers.image import OCI_CONFIG, OCI_MANIFEST, Descriptor, ImageConfig, dumps, manifest_bytes
from layers.image import sha256_digest
from layers.reference import Reference

IN_TOTO = "application/vnd.in-toto+json"
STATEMENT = "https://in-toto.io/Statement/v0.1"
_UNKNOWN = (("architecture", "unknown"), ("os", "unknown"))


@dataclass(frozen=True)
class Predicate:
    type: str  # predicateType, e.g. https://spdx.dev/Document
    body: dict[str, Any]


def attest(archive: ArchiveImage, image: ImageConfig,
           predicates: tuple[Predicate, ...]) -> ArchiveImage:
    """`archive` with an attestation manifest of `predicates` about its image manifest (none:
    `archive` as it is)."""
    if not predicates:
        return archive
    return dataclasses.replace(archive, attached=(attestation_manifest(
        manifest_of(archive), archive.tags, image, predicates),))


def attestation_manifest(manifest: bytes, names: tuple[Reference, ...], image: ImageConfig,
                         predicates: tuple[Predicate, ...]) -> Attached:
    """The attestation manifest for the image manifest `manifest` named `names`: the
    statements' subject is each name as a purl, as BuildKit writes it."""
    digest = sha256_digest(manifest)
    platform = quote(f"{image.os}/{image.architecture}"
                     + (f"/{image.variant}" if image.variant else ""), safe="")
    subject = [{"name": f"pkg:docker/{_purl_name(name)}?platform={platform}",
                "digest": {"sha256": digest.partition(":")[2]}} for name in names] or \
        [{"name": "_", "digest": {"sha256": digest.partition(":")[2]}}]
    statements = [dumps({"_type": STATEMENT, "predicateType": predicate.type,
                         "subject": subject, "predicate": predicate.body})
                  for predicate in predicates]
    layers = [Descriptor(IN_TOTO, sha256_digest(s), len(s),
                         (("in-toto.io/predicate-type", predicate.type),))
              for s, predicate in zip(statements, predicates)]
    config = dumps({"architecture": "unknown", "os": "unknown", "config": {},
                    "rootfs": {"type": "layers",
                               "diff_ids": [layer.digest for layer in layers]}})
    body = manifest_bytes(Descriptor(OCI_CONFIG, sha256_digest(config), len(config)), layers,
                          OCI_MANIFEST)
    descriptor = Descriptor(OCI_MANIFEST, sha256_digest(body), len(body),
                            (("vnd.docker.reference.digest", digest),
                             ("vnd.docker.reference.type", "attestation-manifest")), _UNKNOWN)
    return Attached(descriptor, body, (config, *statements))


def _purl_name(name: Reference) -> str:
    """`registry/repo:tag` as BuildKit's subject purl writes it: `registry/repo@tag`."""
    return f"{name.registry}/{name.repository}@{name.tag or 'latest'}"
