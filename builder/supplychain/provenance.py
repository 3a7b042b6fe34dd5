"""SLSA provenance of a build, shaped as BuildKit's (`--provenance`): v0.2 by default, as buildx
still writes it, v1 with `version=v1`. What it records: the builder, the Dockerfile's and the
context's digests, each FROM image's digest, build args and target (mode=max only), the
platform, SOURCE_DATE_EPOCH, and whether the build is reproducible. Never a secret: --secret and
--ssh are not read here at all."""
from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from datetime import datetime, timezone
from collections.abc import Mapping
from urllib.parse import quote

from builder import __version__
from builder.cache.sources import hash_files, remembered
from builder.sources.tree import Tree
from builder.supplychain.attestation import Predicate
from builder.supplychain.options import Attestations

BUILD_TYPE = "https://mobyproject.org/buildkit@v1"
BUILD_TYPE_V1 = "https://github.com/moby/buildkit/blob/master/docs/attestations/slsa-definitions.md"
PREDICATE_V02 = "https://slsa.dev/provenance/v0.2"
PREDICATE_V1 = "https://slsa.dev/provenance/v1"
BUILDER_ID = f"https://pybuild.invalid/pybuild@{__version__}"


@dataclass(frozen=True)
class Material:
    uri: str  # pkg:docker/NAME@TAG?platform=...
    sha256: str  # hex


@dataclass(frozen=True)
class BuildFacts:
    """What the build knew that provenance records; times are POSIX seconds."""

    dockerfile: bytes
    dockerfile_name: str
    context_digest: str  # `context_digest` of the build's context
    materials: tuple[Material, ...]
    build_args: dict[str, str | None] = field(default_factory=dict)
    target: str | None = None
    platform: str = "linux/amd64"
    source_date_epoch: int | None = None
    started: float = 0.0
    finished: float = 0.0


def base_material(name: str, digest: str, platform: str) -> Material:
    """A FROM image as BuildKit's materials name it: a docker purl and its manifest digest."""
    repository, _, tag = name.rpartition(":")
    where = f"{repository}@{tag}" if repository and "/" not in tag else f"{name}@latest"
    return Material(f"pkg:docker/{where}?platform={quote(platform, safe='')}",
                    digest.partition(":")[2])


def context_digest(context: Tree, memos: Mapping[str, tuple] | None = None) -> str:
    """One digest of what the build could read from the context (the .dockerignore applied):
    each entry's path, type, mode and content (a file's sha256, a symlink's target). The walk is
    the context's own, shared with the build's COPYs (a COPY of the whole context has already
    stat-ed every file); `memos`: the cache's remembered file digests (host path -> FileMemo
    fields); a file whose size, times, inode and mode are the memo's is not read again (reading
    a 524 MB context took 1.2 s of every push of an unchanged build)."""
    outer = hashlib.sha256()
    get = (memos or {}).get
    for found in context.walk(""):
        st = found.st
        mode = st.st_mode
        if stat.S_ISREG(mode):
            body = remembered(get(found.host), st) or hash_files([found])[found.host]
        elif stat.S_ISLNK(mode):
            body = os.readlink(found.host)
        else:
            body = ""
        outer.update(f"{found.rel}\0{stat.S_IFMT(mode):o}\0{mode & 0o7777:o}\0{body}\n"
                     .encode("utf-8", "surrogateescape"))
    return outer.hexdigest()


def provenance_predicate(facts: BuildFacts, wanted: Attestations) -> Predicate:
    """The provenance predicate `wanted` asks for (mode min or max, version v0.2 or v1)."""
    full = wanted.provenance == "max"
    args: dict[str, str] = {}
    if full:
        args = {f"build-arg:{key}": value for key, value in sorted(facts.build_args.items())
                if value is not None}
        if facts.target:
            args["target"] = facts.target
    config_source = {"uri": facts.dockerfile_name,
                     "digest": {"sha256": hashlib.sha256(facts.dockerfile).hexdigest()},
                     "entryPoint": facts.dockerfile_name}
    context = {"name": "context",
               "digest": {"sha256": facts.context_digest}}
    materials = [{"uri": m.uri, "digest": {"sha256": m.sha256}} for m in facts.materials]
    reproducible = facts.source_date_epoch is not None
    times = {} if reproducible else {"started": _time(facts.started),
                                     "finished": _time(facts.finished)}
    epoch = {} if facts.source_date_epoch is None else {
        "SOURCE_DATE_EPOCH": str(facts.source_date_epoch)}
    if wanted.provenance_version == "v1":
        return Predicate(PREDICATE_V1, {
            "buildDefinition": {
                "buildType": BUILD_TYPE_V1,
                "externalParameters": {
                    "configSource": config_source,
                    "request": {"frontend": "dockerfile.v0", "args": args,
                                "locals": [context, {"name": "dockerfile"}]}},
                "internalParameters": {"builderPlatform": facts.platform} | epoch,
                "resolvedDependencies": materials},
            "runDetails": {
                "builder": {"id": wanted.builder_id or BUILDER_ID},
                "metadata": ({"startedOn": times["started"], "finishedOn": times["finished"]}
                             if times else {}) | {"reproducible": reproducible}}})
    return Predicate(PREDICATE_V02, {
        "builder": {"id": wanted.builder_id or BUILDER_ID},
        "buildType": BUILD_TYPE,
        "materials": materials,
        "invocation": {
            "configSource": config_source,
            "parameters": {"frontend": "dockerfile.v0", "args": args,
                           "locals": [context, {"name": "dockerfile"}]},
            "environment": {"platform": facts.platform} | epoch},
        "metadata": ({"buildStartedOn": times["started"], "buildFinishedOn": times["finished"]}
                     if times else {}) | {
            "completeness": {"parameters": full, "environment": True, "materials": False},
            "reproducible": reproducible}})


def _time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
