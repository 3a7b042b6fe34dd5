"""Pushing an image: its blobs (each only if the registry lacks it, mounted from another
repository when it can be), then its config, then the manifest that names them.

Uploads are monolithic (POST, then one PUT with the whole body) unless a chunk size is asked for:
registries and proxies that cap request sizes want PATCHes. A blob still being made (a layer
compressed for the push) streams in one chunked PATCH, as `docker push` sends it. The Location a registry answers with
is used as it comes (relative or absolute, with whatever query it carries); only `digest` is added.
"""
from __future__ import annotations

import dataclasses
import functools
import io
from collections.abc import Callable, Iterable, Sequence
from typing import BinaryIO, Literal
from urllib.parse import urlencode, urlsplit, urlunsplit

from layers.archive import Attached, attached_index
from layers.image import OCI_INDEX, Descriptor, manifest_bytes, sha256_digest
from layers.layerblob import LayerBlob
from layers.reference import Reference
from layers.registry.errors import RegistryError, about
from layers.registry.mediatypes import FAMILIES, layer_media_type
from layers.registry.parallel import run_all
from layers.registry.pull import check_digest_header
from layers.registry.transport import Response, Session

_OCTETS = {"Content-Type": "application/octet-stream"}


def push_scope(repository: str) -> str:
    return f"repository:{repository}:pull,push"


def push_blob(session: Session, ref: Reference, digest: str, size: int,
              open_blob: Callable[[], BinaryIO], *, mount_from: Sequence[str] = (),
              chunk_size: int | None = None) -> bool:
    """Make the blob present in `ref`'s repository: nothing if it is there, a mount from the
    first of `mount_from` (repositories of the same registry) that has it, else an upload.
    Returns whether its bytes were uploaded."""
    scope = push_scope(ref.repository)
    with about("push", ref):
        if _exists(session, ref, digest):
            return False
        started = _mount_or_start(session, ref, digest, mount_from)
        if started is None:
            return False
        try:
            _upload(session, scope, started, digest, size, open_blob, chunk_size)
        except RegistryError:
            # When the connection dropped after the last request arrived, its retry finds the
            # upload already closed; the blob is then complete.
            if not _exists(session, ref, digest):
                raise
        return True


def push_streamed(session: Session, ref: Reference, pieces: Iterable[bytes],
                  digest: Callable[[], str]) -> None:
    """Upload a blob while it is being made: one PATCH whose body is `pieces`, sent chunked as
    they come, then the PUT that names `digest()`, known once the pieces are done. Not retried
    (the pieces cannot be sent again): on a RegistryError the caller uploads the finished blob."""
    scope = push_scope(ref.repository)
    with about("push", ref):
        started = session.request("POST", f"/v2/{ref.repository}/blobs/uploads/", scope=scope,
                                  expect=(202,))
        patched = session.request("PATCH", started.location(), scope=scope, headers=_OCTETS,
                                  body=pieces, expect=(202,))
        session.request("PUT", _with_digest(patched.location(), digest()), scope=scope,
                        headers=_OCTETS, body=b"", expect=(201,))


def push_manifest(session: Session, ref: Reference, body: bytes, media_type: str) -> str:
    """PUT a manifest or index under `ref`'s tag (or its digest when it has no tag); returns
    its digest."""
    digest = sha256_digest(body)
    with about("push", ref):
        if ref.digest and ref.digest != digest:
            raise RegistryError(f"the manifest hashes to {digest}, not {ref.digest}")
        response = session.request(
            "PUT", f"/v2/{ref.repository}/manifests/{ref.tag or digest}",
            scope=push_scope(ref.repository), headers={"Content-Type": media_type}, body=body,
            expect=(201,))
        check_digest_header(response, digest)
        return digest


def push_image(session: Session, ref: Reference, config: bytes, layers: Sequence[LayerBlob], *,
               media_types: Literal["oci", "docker"] = "oci", mount_from: Sequence[str] = (),
               workers: int = 3, annotations: tuple[tuple[str, str], ...] = (),
               attach: Callable[[bytes], tuple[Attached, ...]] | None = None) -> str:
    """Push the layers (a few at a time), the config, and an image manifest of the `media_types`
    family naming them, with `annotations` (OCI only); returns the manifest digest. `attach`
    gives, for the manifest, manifests to attach (attestations): then the tag names an image
    index of them and the image's, as BuildKit pushes it, and its digest is returned."""
    with about("push", ref):
        manifest_type, config_type = FAMILIES[media_types]
        try:
            descriptors = [Descriptor(layer_media_type(layer.media_type, media_types),
                                      layer.digest, layer.size) for layer in layers]
        except ValueError as error:
            raise RegistryError(str(error)) from None
        unique = {layer.digest: layer for layer in layers}.values()
        run_all(lambda layer: push_blob(session, ref, layer.digest, layer.size, layer.open,
                                        mount_from=mount_from), unique, workers)
        config_digest = sha256_digest(config)
        push_blob(session, ref, config_digest, len(config), lambda: io.BytesIO(config),
                  mount_from=mount_from)
        manifest = manifest_bytes(Descriptor(config_type, config_digest, len(config)),
                                  descriptors, manifest_type, annotations)
        attached = attach(manifest) if attach else ()
        if not attached:
            return push_manifest(session, ref, manifest, manifest_type)
        by_digest = dataclasses.replace(ref, tag=None, digest=None)
        push_manifest(session, by_digest, manifest, manifest_type)
        for other in attached:
            for blob in other.blobs:
                push_blob(session, ref, sha256_digest(blob), len(blob),
                          functools.partial(io.BytesIO, blob))
            push_manifest(session, by_digest, other.manifest, other.descriptor.media_type)
        index = attached_index(Descriptor(manifest_type, sha256_digest(manifest), len(manifest)),
                               config, attached)
        return push_manifest(session, ref, index, OCI_INDEX)


def _exists(session: Session, ref: Reference, digest: str) -> bool:
    return session.request("HEAD", f"/v2/{ref.repository}/blobs/{digest}",
                           scope=push_scope(ref.repository), expect=(200, 404)).status == 200


def _mount_or_start(session: Session, ref: Reference, digest: str,
                    mount_from: Sequence[str]) -> Response | None:
    """None when the blob was mounted from one of `mount_from`; else the answer that opened
    an upload (a declined mount opens one too), with its Location."""
    repository = ref.repository
    scope = push_scope(repository)
    started = None
    for source in (s for s in mount_from if s != repository):
        if started is not None:  # the previous mount failed but opened an upload: cancel it
            session.request("DELETE", started.location(), scope=scope, expect=(204, 404))
        query = urlencode({"mount": digest, "from": source})
        started = session.request("POST", f"/v2/{repository}/blobs/uploads/?{query}",
                                  scope=f"{scope} repository:{source}:pull", expect=(201, 202))
        if started.status == 201:
            return None
    return started or session.request("POST", f"/v2/{repository}/blobs/uploads/", scope=scope,
                                      expect=(202,))


def _upload(session: Session, scope: str, started: Response, digest: str, size: int,
            open_blob: Callable[[], BinaryIO], chunk_size: int | None) -> None:
    location = started.location()
    if chunk_size:
        minimum = started.header("OCI-Chunk-Min-Length") or ""
        chunk_size = max(chunk_size, int(minimum) if minimum.isdigit() else 0)
        location = _patch(session, scope, location, open_blob, size, chunk_size)
        session.request("PUT", _with_digest(location, digest), scope=scope, headers=_OCTETS,
                        body=b"", expect=(201,))
        return
    with open_blob() as blob:
        session.request("PUT", _with_digest(location, digest), scope=scope,
                        headers={**_OCTETS, "Content-Length": str(size)}, body=blob,
                        expect=(201,))


def _patch(session: Session, scope: str, location: str, open_blob: Callable[[], BinaryIO],
           size: int, chunk: int) -> str:
    """Send the blob in PATCHes of `chunk` bytes; returns the Location to close the upload at.
    After a 416 (the registry holds a different amount than was sent), the upload's status
    says where to go on from."""
    offset = 0
    refused_at = None
    with open_blob() as blob:
        while offset < size:
            blob.seek(offset)
            data = blob.read(min(chunk, size - offset))
            response = session.request(
                "PATCH", location, scope=scope, expect=(202, 416), body=data,
                headers={**_OCTETS, "Content-Range": f"{offset}-{offset + len(data) - 1}"})
            if response.status == 202:
                offset += len(data)
            elif refused_at == offset:
                raise RegistryError(f"the upload refused the chunk at {offset} twice", 416)
            else:
                refused_at = offset
                response = session.request("GET", location, scope=scope, expect=(204,))
                offset = _received(response)
            location = response.location()
    return location


def _received(status: Response) -> int:
    """How many bytes an upload holds, from its status's `Range: 0-<last byte>`. Distribution
    answers "0-0" for an empty upload too, so that reads as empty: were it one byte, resending
    it is refused with a 416, while skipping a byte that was not there would corrupt the blob."""
    last = (status.header("Range") or "").rpartition("-")[2]
    return int(last) + 1 if last.isdigit() and last != "0" else 0


def _with_digest(location: str, digest: str) -> str:
    parts = urlsplit(location)
    query = "&".join(part for part in (parts.query, urlencode({"digest": digest})) if part)
    return urlunsplit(parts._replace(query=query))
