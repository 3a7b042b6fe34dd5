"""A build for several platforms (`--platform a,b`): one build per platform, one after the other
in the same cache, then their tarballs merged into one whose index.json names an image index
(builder/output/platformindex.py). The host's platform is built last, so the local image store
keeps the host's image under the tags."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import replace

from builder.progress.sinks import Log
from builder.request import BuildRequest, BuildResult
from layers.platform import host_platform


def build_platforms(request: BuildRequest, log: Log,
                    build_one: Callable[[BuildRequest, Log], BuildResult]) -> BuildResult:
    """Each platform's build, then the tarball of them all; the result is the host's (else the
    last) platform's, with the index's digest as its manifest digest."""
    from builder.output.platformindex import combine
    assert request.output and request.output != "-", "a multi-platform build writes a file"
    host = host_platform().architecture
    order = sorted(request.platforms, key=lambda p: p.architecture == host)
    directory = os.path.dirname(os.path.abspath(request.output))
    with tempfile.TemporaryDirectory(prefix=".pybuild-platforms-", dir=directory) as work:
        paths = {platform: os.path.join(work, f"{number}.tar")
                 for number, platform in enumerate(request.platforms)}
        for platform in order:
            result = build_one(replace(request, platforms=(platform,), output=paths[platform],
                                       iidfile=None), log)
        number = log.step(f"writing the image index of {len(paths)} platforms to "
                          f"{request.output}")
        digest = combine([(platform, paths[platform]) for platform in request.platforms],
                         request.output)
        log.done(number)
    if request.iidfile:
        with open(request.iidfile, "w", encoding="ascii") as file:
            file.write(digest)
    return replace(result, manifest_digest=digest)
