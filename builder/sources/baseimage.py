"""Where FROM's image (and COPY --from's, when it names no stage) comes from: a `--build-context`
named like the image, else the local image store, else its registry (builder/sources/pull.py,
through the `find` the build passes); the not-found error lists where pybuild looked.

`--build-context NAME=SOURCE` follows buildx's forms, plus skopeo's archive transports:

    NAME=docker-image://REF              the image REF of the local store
    NAME=oci-layout://DIR[:TAG|@DIGEST]  an OCI layout directory; TAG is its ref.name annotation
    NAME=docker-archive:PATH[:REF]       a `docker save` tarball; REF one of its RepoTags
    NAME=oci-archive:PATH[:TAG]          an OCI layout as a tarball
    NAME=DIR                             a local directory (for COPY --from; not a base image);
                                         its own .dockerignore applies, not the main context's

In the layout and archive forms the path ends at the first `:`, as buildx and skopeo split them.
A context named `alpine` stands for `FROM alpine` and `FROM alpine:latest` alike, as in BuildKit:
both sides are compared in Docker's familiar form. Archive sources are read into the blob store
(layers verified, stored by diff ID) without tagging anything in the image store.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from builder.errors import BuildError
from layers.image import ImageConfig, is_digest, parse_config
from layers.imagestore import ImageStore, StoredImage
from layers.reference import Reference, parse_reference

if TYPE_CHECKING:
    from layers.archive_reader import ArchiveEntry
    from layers.snapshots import SnapshotStore, Unpacking

_REMOTE_SCHEMES = ("http://", "https://", "git://", "git@", "ssh://", "target:")


@dataclass(frozen=True)
class StoreSource:
    """`docker-image://REF`: an image of the local store."""

    text: str
    reference: Reference


@dataclass(frozen=True)
class ArchiveSource:
    """An image in an OCI layout or an archive, chosen by tag (or reference) or by digest."""

    text: str
    path: str
    select: str | None = None
    digest: str | None = None


@dataclass(frozen=True)
class DirectorySource:
    """A local directory: files for COPY --from, not an image."""

    text: str
    path: str


ContextSource = StoreSource | ArchiveSource | DirectorySource


@dataclass(frozen=True)
class BaseImage:
    """The image a stage starts from: its config (layers named by diff ID, all in the blob store)
    and, for messages and the log, where it was found."""

    config: ImageConfig
    image_id: str
    origin: str
    manifest_digest: str = ""  # of the store's manifest, for provenance; "" from an archive

    @property
    def diff_ids(self) -> tuple[str, ...]:
        return self.config.diff_ids


@dataclass(frozen=True)
class Use:
    """Which instruction asks for an image, as messages say it: `FROM x` or `COPY --from=x`,
    what is missing, and what else the name could have named."""

    instruction: str
    missing: str
    names: str

    @staticmethod
    def of(name: str, by: str) -> "Use":
        if by != "FROM":
            return Use(f"{by}={name}", f"image {name!r} of {by}", "stage or --build-context")
        return Use(f"FROM {name}", f"base image {name!r}", "--build-context")


def parse_build_context(text: str) -> tuple[str, ContextSource]:
    """`NAME=SOURCE` -> (NAME, source); paths are made absolute. Raises ValueError."""
    name, _, value = text.partition("=")
    if not name or not value:
        raise ValueError(f"--build-context {text!r}: expected NAME=SOURCE")
    return name, _parse_source(value)


def _parse_source(value: str) -> ContextSource:
    if value.startswith("docker-image://"):
        return StoreSource(value, parse_reference(value.removeprefix("docker-image://")))
    if value.startswith("oci-layout://"):
        rest, _, digest = value.removeprefix("oci-layout://").partition("@")
        path, _, tag = rest.partition(":")
        if digest and not is_digest(digest):
            raise ValueError(f"{value}: {digest!r} is not a sha256 digest")
        return ArchiveSource(value, _absolute(path, value), tag or None, digest or None)
    for scheme in ("docker-archive:", "oci-archive:"):
        if value.startswith(scheme):
            path, _, select = value.removeprefix(scheme).partition(":")
            return ArchiveSource(value, _absolute(path, value), select or None)
    if value.startswith(_REMOTE_SCHEMES):
        raise ValueError(f"{value}: URL, git and target build contexts are not supported yet")
    return DirectorySource(value, _absolute(value, value))


def _absolute(path: str, value: str) -> str:
    if not path:
        raise ValueError(f"{value}: no path given")
    return os.path.abspath(path)


def resolve_base(name: str, store: ImageStore, contexts: Mapping[str, ContextSource],
                 find: Callable[[Reference], StoredImage | None] | None = None, *,
                 by: str = "FROM", snapshots: SnapshotStore | None = None,
                 unpacking: Unpacking | None = None) -> BaseImage:
    """The image `FROM name` means (`by` "COPY --from", the image `COPY --from=name` means, which
    the messages then say). `find` looks a reference up in the store and, where it may, in its
    registry (builder/sources/pull.py); without it, only the store is asked. The layers of an
    archive build context are unpacked into `snapshots` while read, each reported through
    `unpacking` (see layers/archive_reader.py). Raises BuildError (without a place: the caller
    adds the line) or LayerError (a damaged archive or store)."""
    use = Use.of(name, by)
    named = named_context(name, contexts)
    if named is not None:
        context_name, source = named
        via = f"--build-context {context_name}={source.text}"
        if isinstance(source, StoreSource):
            return _from_store(name, source.reference, store, via, contexts, find, use)
        if isinstance(source, ArchiveSource):
            return _from_archive(source, store, via, snapshots, unpacking)
        raise BuildError(f"{use.instruction}: {via} is a directory; a directory can be used with "
                         "COPY --from, not as a base image")
    try:
        ref = parse_reference(name)
    except ValueError as error:
        raise BuildError(f"{use.instruction}: {error}") from None
    return _from_store(name, ref, store, None, contexts, find, use)


def named_context(name: str, contexts: Mapping[str, ContextSource]
                  ) -> tuple[str, ContextSource] | None:
    """The `--build-context` that `name` (of FROM or COPY --from) names, with its own name."""
    wanted = _key(name)
    for context_name, source in contexts.items():
        if _key(context_name) == wanted:
            return context_name, source
    return None


def _key(name: str) -> str:
    """How a FROM name and a build context's name are compared: Docker's familiar form."""
    try:
        return parse_reference(name).familiar()
    except ValueError:
        return name


def _from_store(name: str, ref: Reference, store: ImageStore, via: str | None,
                contexts: Mapping[str, ContextSource],
                find: Callable[[Reference], StoredImage | None] | None, use: Use) -> BaseImage:
    """`ref` from the local store or its registry; `via` is the build context that led there,
    if one did."""
    where = f"the local image store ({store.dir})"
    image = (find or store.get)(ref)
    if image is None:
        if via:
            problem = f"{via} names {ref.familiar()}, which {where} does not have"
        else:
            given = ", ".join(sorted(contexts)) or "none were given"
            problem = (f"no {use.names} is named {name} ({given}), and {where} has no "
                       f"{ref.familiar()}")
        others = sorted(i.ref.familiar() for i in store.list()
                        if i.ref is not None and i.ref.familiar_name() == ref.familiar_name())
        if others:
            problem += f" (it has {', '.join(others)})"
        if find is not None:
            problem += f", and the registry {ref.registry} has no such image"
        raise BuildError(f"{use.missing} not found: {problem}; add it with `pybuild load "
                         "-i ARCHIVE`, or name an archive with --build-context")
    missing = [d for d in image.diff_ids if not store.blobs.has(d)]
    if missing:
        raise BuildError(f"{use.instruction}: layer {missing[0]} of {ref.familiar()} is missing "
                         f"from {store.blobs.dir}; load the image again")
    return BaseImage(image.config, image.image_id, via or f"{where}: {ref.familiar()}",
                     image.manifest_digest)


def _from_archive(source: ArchiveSource, store: ImageStore, via: str,
                  snapshots: SnapshotStore | None, unpacking: Unpacking | None) -> BaseImage:
    try:
        from layers.archive_reader import ImageArchive  # only archive build contexts need it
        with ImageArchive(source.path, store.blobs) as archive:
            entry = _select(archive.entries, source, via)
            archive.import_layers([entry], snapshots, unpacking)
    except OSError as error:
        raise BuildError(f"{via}: cannot read {error.filename or source.path}: "
                         f"{error.strerror or error}") from None
    return BaseImage(parse_config(entry.config), entry.image_id, via)


def _select(entries: tuple[ArchiveEntry, ...], source: ArchiveSource, via: str) -> ArchiveEntry:
    """The image a source names: by digest (of a manifest, an index, or the image ID), by tag or
    reference, else the archive's only image, else the one tagged `latest` (buildx's default)."""
    if source.digest:
        wanted = f"@{source.digest}"
        matches = [e for e in entries if source.digest in (*e.digests, e.image_id)]
    elif source.select is None and len(entries) == 1:
        return entries[0]
    else:
        wanted = source.select or "latest"
        matches = [e for e in entries if _is_named(e, wanted)]
    if len(matches) == 1:
        return matches[0]
    offered = ", ".join(sorted({n for e in entries for n in _names(e)}))
    problem = "several images match" if matches else "no image matches"
    raise BuildError(f"{via}: {problem} {wanted} (the archive has: {offered})")


def _is_named(entry: ArchiveEntry, wanted: str) -> bool:
    """Whether `wanted` is one of the entry's ref.name annotations or tags."""
    if wanted in entry.ref_names:
        return True
    try:
        return parse_reference(wanted) in entry.names
    except ValueError:
        return False


def _names(entry: ArchiveEntry) -> list[str]:
    """How an error message lists an image: its names, else its short image ID."""
    return [*entry.ref_names, *(n.familiar() for n in entry.names)] or [entry.image_id[:19]]
