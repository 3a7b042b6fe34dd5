"""The -o outputs of buildx's syntax that write files: an image archive (type=docker, the
tarball `docker load` reads; type=oci, an OCI layout alone), the root filesystem as one tar
(type=tar) or as a directory (type=local). Each is written whole or not at all (a temp name and
a rename), or streamed to stdout with dest=-."""
from __future__ import annotations

import sys
from collections.abc import Callable

from builder.output.atomicfile import replacing
from builder.output.earlytar import EarlyTarball
from builder.output.localdir import write_local
from builder.output.spec import OutputSpec
from builder.output.tarball import layer_blobs, write_output
from builder.supplychain.attestation import Predicate, attest
from layers.archive import ArchiveImage
from layers.blobstore import BlobStore
from layers.compression import Compression
from layers.flatten import write_flat_tar
from layers.image import Annotations, ImageConfig
from layers.reference import Reference, parse_reference


def export(spec: OutputSpec, image: ImageConfig, config: bytes, blobs: BlobStore, *,
           tags: tuple[Reference, ...], compression: Compression, epoch: int | None,
           progress: Callable[[int, int], None] | None = None,
           annotations: Annotations = Annotations(),
           predicates: tuple[Predicate, ...] = (),
           early: EarlyTarball | None = None) -> tuple[str, list[str]]:
    """Write one output; returns the manifest digest of an image archive (else "") and
    warnings. An archive is named `tags` and compressed with `compression` unless the spec says
    otherwise (name=, compression=), and carries `annotations` and an attestation manifest of
    `predicates`. `epoch` is SOURCE_DATE_EPOCH,
    the files' mtime in a tar or directory, as BuildKit sets it there. `early`: the archive's
    file begun while the build ran, when it is this output's."""
    layers = [blobs.path(diff_id) for diff_id in image.diff_ids]
    if spec.kind == "local":
        return "", write_local(spec.dest, layers, epoch)
    if spec.kind == "tar":
        if spec.dest == "-":
            write_flat_tar(sys.stdout.buffer, layers, epoch)
        else:
            with replacing(spec.dest) as out:
                write_flat_tar(out, layers, epoch)
        return "", []
    names = tuple(parse_reference(name) for name in spec.names) or tags
    archive = attest(ArchiveImage(config, layer_blobs(blobs, image,
                                                      spec.compression or compression),
                                  names, "docker" if spec.oci_mediatypes is False else "oci",
                                  annotations), image, predicates)
    # buildx's annotation is RFC 3339 to the second
    created = image.created.partition(".")[0].rstrip("Z") + "Z" if spec.kind == "oci" else None
    return write_output(spec.dest, archive, progress, oci_created=created,
                        early=early if early is not None and early.path == spec.dest else None), []
