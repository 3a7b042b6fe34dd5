"""`--push` of a multi-platform build: the image index of its tarball (builder/output/
platformindex.py) and everything it names, pushed as they are in the archive: blobs, each
platform's manifest by digest, then the index under every tag, as BuildKit pushes one."""
from __future__ import annotations

import json
import tarfile
from collections.abc import Callable
from dataclasses import replace

from layers.image import OCI_INDEX
from layers.reference import Reference
from layers.registry.push import push_blob, push_manifest
from layers.registry.transport import Session


def push_index(archive_path: str, ref: Reference, session: Session) -> str:
    """Push the archive's image index as `ref`; returns the index's digest."""
    with tarfile.open(archive_path) as archive:
        def blob(digest: str) -> bytes:
            return archive.extractfile("blobs/sha256/" + digest.partition(":")[2]).read()

        def opener(digest: str) -> Callable:
            return lambda: archive.extractfile("blobs/sha256/" + digest.partition(":")[2])

        by_digest = replace(ref, tag=None, digest=None)

        def put(descriptor: dict, target: Reference) -> str:
            body = blob(descriptor["digest"])
            document = json.loads(body)
            if descriptor["mediaType"] == OCI_INDEX:
                for child in document["manifests"]:
                    put(child, by_digest)
            else:
                for part in [document["config"], *document["layers"]]:
                    push_blob(session, ref, part["digest"], part["size"], opener(part["digest"]))
            return push_manifest(session, target, body, descriptor["mediaType"])

        top = json.load(archive.extractfile("index.json"))["manifests"][0]
        return put(top, ref)
