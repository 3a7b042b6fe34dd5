"""pybuild as a library, as the command line uses it:

    from builder.api import BuildRequest, build
    from builder.progress.sinks import PlainSink

    result = build(BuildRequest(context="app", tags=("app:1",), output="app.tar"), PlainSink())
    print(result.image_id, [(s.title, s.cached, s.reason, s.seconds) for s in result.steps])

`build` raises `grammar.errors.DockerfileError` (with `builder.errors.BuildError` and
`NotSupported` among its kinds: every one names its Dockerfile line) or `layers.errors.LayerError`
(an image, archive or registry problem), and KeyboardInterrupt when interrupted; the sinks have
been closed by then. Events reach each sink as they happen (builder/progress/events.py).
"""
from __future__ import annotations

import os
from dataclasses import replace

from builder.build import build as _build
from builder.request import BuildRequest, BuildResult
from builder.cache.root import default_cache_dir
from builder.progress.events import Sink
from builder.progress.sinks import Log
from builder.progress.summary import StepSummary

__all__ = ["BuildRequest", "BuildResult", "StepSummary", "build"]


def build(request: BuildRequest, *sinks: Sink) -> BuildResult:
    """Run the build `request` describes, reporting to `sinks`. A relative context or Dockerfile
    path is taken from the current directory; no cache_dir means the default cache root."""
    request = replace(
        request, context=os.path.abspath(request.context),
        dockerfile=os.path.abspath(request.dockerfile) if request.dockerfile else None,
        cache_dir=os.path.abspath(request.cache_dir or default_cache_dir()))
    log = Log(*sinks)
    try:
        if len(request.platforms) > 1:
            from builder.multiplatform import build_platforms
            return build_platforms(request, log, _build)
        return _build(request, log)
    finally:
        log.finish()
