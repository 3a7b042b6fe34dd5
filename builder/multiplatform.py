"""A build for several platforms (`--platform a,b`): one build per platform, one after the other
in the same cache, then their tarballs merged into one whose index.json names an image index
(builder/output/platformindex.py), which --push pushes (builder/output/pushindex.py). The host's
platform is built last, so the local image store keeps the host's image under the tags."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import replace

from builder.progress.sinks import Log
from builder.request import BuildRequest, BuildResult
from layers.compression import Compression
from layers.platform import host_platform


def build_platforms(request: BuildRequest, log: Log,
                    build_one: Callable[[BuildRequest, Log], BuildResult]) -> BuildResult:
    """Each platform's build, then the tarball of them all (-o) and its push (--push); the
    result is the host's (else the last) platform's, with the index's digest as its manifest
    digest. Layers are gzip-compressed for a push, as a single-platform push has them."""
    from builder.output.platformindex import combine
    host = host_platform().architecture
    order = sorted(request.platforms, key=lambda p: p.architecture == host)
    compression = request.compression
    if request.push and compression is Compression.NONE:
        compression = Compression.GZIP
    directory = os.path.dirname(os.path.abspath(request.output)) if request.output else None
    with tempfile.TemporaryDirectory(prefix=".pybuild-platforms-", dir=directory) as work:
        paths = {platform: os.path.join(work, f"{number}.tar")
                 for number, platform in enumerate(request.platforms)}
        for platform in order:
            result = build_one(replace(request, platforms=(platform,), output=paths[platform],
                                       iidfile=None, push=False, compression=compression), log)
        output = request.output or os.path.join(work, "index.tar")
        number = log.step(f"writing the image index of {len(paths)} platforms")
        digest = combine([(platform, paths[platform]) for platform in request.platforms], output)
        log.done(number)
        pushed = _push(output, request, log) if request.push else ()
    if request.iidfile:
        with open(request.iidfile, "w", encoding="ascii") as file:
            file.write(digest)
    return replace(result, manifest_digest=digest, pushed=pushed)


def _push(archive: str, request: BuildRequest, log: Log) -> tuple[tuple[str, str], ...]:
    from builder.output.pushindex import push_index
    from layers.reference import parse_reference
    from layers.registry.sessions import session_for
    pushed = []
    for tag in request.tags:
        ref = parse_reference(tag)
        number = log.step(f"pushing {ref.familiar()} (an image index)")
        session = session_for(ref, insecure_registries=request.insecure_registries,
                              warn=log.alert, timeout=request.registry_timeout)
        digest = push_index(archive, ref, session)
        log.info(number, f"{ref.familiar()}@{digest}")
        log.done(number)
        pushed.append((ref.familiar(), digest))
    return tuple(pushed)
