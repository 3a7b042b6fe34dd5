"""Where a built image goes, in this order: the tarball (-o), the other -o outputs (OCI archive,
root filesystem tar or directory), docker load (--load), the local image store (-t), the registry
(--push), the cache export (--cache-to), the image ID file (--iidfile). Each destination is a
step of the log; none changes the image."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from builder.output.exports import export
from builder.output.tarball import layer_blobs, write_output
from builder.progress.sinks import Log
from builder.request import BuildRequest
from builder.supplychain.attestation import Predicate, attest, attestation_manifest
from builder.units import human_size
from layers.archive import ArchiveImage, manifest_of
from layers.compression import Compression
from layers.errors import LayerError
from layers.image import ImageConfig, sha256_digest
from layers.layerblob import LayerBlob
from layers.reference import Reference

if TYPE_CHECKING:
    from builder.output.earlytar import EarlyTarball
    from builder.cache.remote import RemoteLayers
    from builder.cache.spec import CacheSpec
    from builder.output.spec import OutputSpec
    from builder.cache.steps import StepCache
    from grammar.mounts import CacheMount
    from layers.blobstore import BlobStore
    from layers.cachemanifest import CacheRecord, MountBlob
    from layers.imagestore import ImageStore
    from builder.supplychain.provenance import BuildFacts
    from layers.registry.transport import Session


@dataclass(frozen=True)
class Delivered:
    image_id: str
    manifest_digest: str  # of the tarball's (or docker load's) manifest, "" without one
    blobs: tuple[LayerBlob, ...]
    pushed: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Destinations:
    """What delivery writes to and reads from: the build's stores and its registry sessions."""

    request: BuildRequest
    log: Log
    blobs: BlobStore
    images: ImageStore
    cache: StepCache
    session: Callable[[Reference], Session]
    remote: RemoteLayers | None
    early: EarlyTarball | None = None  # the -o tarball, begun while the build ran


def deliver(image: ImageConfig, tags: tuple[Reference, ...], to: Destinations,
            records: tuple[CacheRecord, ...], mounts: Iterable[CacheMount] = (),
            facts: BuildFacts | None = None) -> Delivered:
    """Hand the image to every destination the request names; `records` are every step's cache
    record, and `mounts` every cache mount of a RUN of the build, for --cache-to; `facts` what
    --provenance records."""
    request, log = to.request, to.log
    if (request.compression is Compression.ZSTD and (request.output or request.docker_load)) or \
            any(spec.kind == "docker" and (spec.compression or request.compression)
                is Compression.ZSTD for spec in request.exports):
        log.warn("zstd layers need Docker 23.0 or newer to load (docker load of "
                 "Docker 20.10 refuses them)")
    if request.source_date_epoch is None and any(spec.rewrite_timestamp
                                                 for spec in request.exports):
        log.warn("rewrite-timestamp=true does nothing without SOURCE_DATE_EPOCH")
    config = image.to_bytes()
    image_id = sha256_digest(config)
    if to.remote is not None:
        to.remote.ensure(image.diff_ids)
    blobs = layer_blobs(to.blobs, image, request.compression)
    everywhere, registry = _attestations(image, tags, to, facts)
    archive = attest(ArchiveImage(config, blobs, tuple(tags), annotations=request.annotations),
                     image, everywhere)
    manifest_digest = ""
    if request.output:
        manifest_digest = _write_tarball(archive, tags, to)
    for spec in request.exports:
        digest = _export(spec, image, config, tags, to,
                         everywhere + registry if spec.kind == "oci" else everywhere)
        manifest_digest = manifest_digest or digest
    if request.docker_load:
        loaded = _docker_load(archive, to)
        manifest_digest = manifest_digest or loaded
    if tags:
        to.images.put(config, refs=tags)
    to.cache.settle()
    if request.push and (request.annotations.index or request.annotations.descriptor):
        log.warn("index and manifest-descriptor annotations are not pushed: pybuild pushes an "
                 "image manifest (in an index only with attestations, not annotated); they are "
                 "in the archives' index.json")
    pushed = _push(config, tags, to, image, everywhere + registry) if request.push else ()
    _export_caches(records, tuple(mounts), to)
    if request.iidfile:
        with open(request.iidfile, "w") as handle:
            handle.write(image_id)
    return Delivered(image_id, manifest_digest, blobs, pushed)


def _write_tarball(archive: ArchiveImage, tags: tuple[Reference, ...], to: Destinations) -> str:
    """-o: skipped when the file there is the one an earlier build wrote for this image."""
    output = to.request.output
    number = to.log.step(f"exporting to {output}")
    identity = sha256_digest(manifest_of(archive) + repr((
        tags, archive.annotations, [a.descriptor.digest for a in archive.attached])).encode())
    if to.cache.output_holds(output, identity):
        to.log.info(number, "unchanged: it already holds this image")
        manifest_digest = sha256_digest(manifest_of(archive))
    else:
        manifest_digest = write_output(output, archive, partial(to.log.progress, number),
                                       early=to.early)
        to.cache.remember_output(output, identity)
    to.log.done(number)
    return manifest_digest


def provenance_wanted(request: BuildRequest) -> bool:
    """Whether an output carries provenance: buildx's default only reaches pushes and OCI
    archives, so a build with neither gathers no facts for it."""
    wanted = request.attestations
    return bool(wanted.provenance) and (not wanted.default_provenance or request.push or any(
        spec.kind == "oci" for spec in request.exports))


def _attestations(image: ImageConfig, tags: tuple[Reference, ...], to: Destinations,
                  facts: BuildFacts | None) -> tuple[tuple[Predicate, ...], tuple[Predicate, ...]]:
    """The in-toto predicates --sbom and --provenance ask for, made once: those every output
    carries, and buildx's default provenance, which only pushes and OCI archives carry."""
    wanted = to.request.attestations
    if not wanted.sbom and facts is None:
        return (), ()
    number = to.log.step("generating attestations")
    everywhere, registry = [], []
    if wanted.sbom:
        from builder.supplychain.sbom import sbom_predicate
        everywhere.append(sbom_predicate(image, to.blobs, tags[0].full() if tags else "image"))
        to.log.info(number, f"SBOM: {len(everywhere[-1].body['packages'])} packages")
    if facts is not None:
        from builder.supplychain.provenance import provenance_predicate
        (registry if wanted.default_provenance else everywhere).append(
            provenance_predicate(facts, wanted))
        to.log.info(number, f"provenance: mode={wanted.provenance}, {wanted.provenance_version}"
                    + (" (buildx's default: for the push and OCI archives)"
                       if wanted.default_provenance else ""))
    to.log.done(number)
    return tuple(everywhere), tuple(registry)


def _export(spec: OutputSpec, image: ImageConfig, config: bytes, tags: tuple[Reference, ...],
            to: Destinations, predicates: tuple[Predicate, ...]) -> str:
    """One -o type=docker|oci|tar|local; returns the manifest digest of an image archive, else
    ""."""
    number = to.log.step(f"exporting to {spec.kind} {'stdout' if spec.dest == '-' else spec.dest}")
    digest, warnings = export(spec, image, config, to.blobs, tags=tags,
                              compression=to.request.compression,
                              epoch=to.request.source_date_epoch,
                              annotations=to.request.annotations, predicates=predicates,
                              progress=partial(to.log.progress, number), early=to.early)
    for warning in warnings:
        to.log.warn(warning)
    to.log.done(number)
    return digest


def _docker_load(archive: ArchiveImage, to: Destinations) -> str:
    """--load: the tarball just written, else the archive streamed into `docker load`
    (then the manifest digest is returned)."""
    from builder.output.dockerload import load_archive, load_file
    request = to.request
    number = to.log.step("exporting to docker (docker load)")
    if request.output:
        digest, said = "", load_file(request.docker_load, request.output)
    else:
        digest, said = load_archive(request.docker_load, archive)
    for line in said:
        to.log.info(number, line)
    to.log.done(number)
    return digest


def _push(config: bytes, tags: tuple[Reference, ...], to: Destinations, image: ImageConfig,
          predicates: tuple[Predicate, ...]) -> tuple[tuple[str, str], ...]:
    from builder.output.push import push
    pushed = []
    for ref in tags:
        number = to.log.step(f"pushing {ref.familiar()}")
        attach = (lambda manifest, ref=ref: (attestation_manifest(
            manifest, (ref,), image, predicates),)) if predicates else None
        digest = push(ref, config, to.blobs, to.request.compression, to.session(ref),
                      to.request.push_media_types, to.request.annotations.manifest, attach)
        to.log.info(number, f"{ref.familiar()}@{digest}")
        to.log.done(number)
        pushed.append((ref.familiar(), digest))
    return tuple(pushed)


def _export_caches(records: tuple[CacheRecord, ...], mounts: tuple[CacheMount, ...],
                   to: Destinations) -> None:
    if not to.request.cache_to:
        return
    from builder.cache.transfer import export_cache
    remote = to.remote.known if to.remote else {}
    packed: dict[str, MountBlob] = {}
    for spec in to.request.cache_to:
        number = to.log.step(f"exporting cache to {spec.describe()}")
        try:
            carried = _mount_blobs(spec, mounts, packed, to) if spec.mounts else ()
            exported = export_cache(spec, records, to.cache.source_manifests(records),
                                    to.blobs, remote, to.session, carried)
        except (LayerError, OSError) as error:
            if not spec.ignore_error:
                raise LayerError(f"--cache-to {spec.text}: {error}") from None
            to.log.warn(f"cache not exported to {spec.describe()}: {error}")
        else:
            to.log.info(number, f"{len(records)} steps, manifest {exported.digest}")
            for mount in carried:
                layer = exported.layers[mount.diff_id]
                news = "sent" if layer.digest in exported.sent else "unchanged, not sent"
                to.log.info(number, f"cache mount {mount.id}: {human_size(mount.size)} of files, "
                                    f"blob {layer.digest[:19]} {human_size(layer.size)}, {news}")
        to.log.done(number)


def _mount_blobs(spec: CacheSpec, mounts: tuple[CacheMount, ...], packed: dict[str, MountBlob],
                 to: Destinations) -> tuple[MountBlob, ...]:
    """The cache mounts `spec` exports: those the build used (never a private one) that this
    runner has files of or its import named, within `mount-max` (a larger one is a warning).
    Each is packed once per build, whatever the number of destinations."""
    from builder.cache.mountblobs import choose, exportable, pack
    imported = to.remote.mounts if to.remote else {}
    carried = []
    for ident in exportable(mounts):
        choice = choose(to.request.cache_dir, ident, imported.get(ident))
        if choice is None:
            continue
        if choice.size > spec.mount_max:
            to.log.warn(f"cache mount {ident} not exported to {spec.describe()}: "
                        f"{human_size(choice.size)} is over mount-max "
                        f"{human_size(spec.mount_max)}")
            continue
        if ident not in packed:
            packed[ident] = pack(to.request.cache_dir, choice, to.blobs)
        carried.append(packed[ident])
    return tuple(carried)
