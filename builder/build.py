"""One build: Dockerfile + context -> image, stage by stage, delivered where the request says.

`build()` is the programmatic entry point the CLI uses. A build reads its Dockerfile, plans the
stages the target needs, builds them in one session (builder/session.py: stores, cache,
registries, sandbox) with a stage builder (builder/stage.py: bases and steps), those that need
nothing of each other at the same time (builder/stagepool.py), stamps the image and delivers it
(builder/output/deliver.py).
"""
from __future__ import annotations

import os
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from builder.checks import CHECK_ARG, dockerfile_checks, failure
from builder.output.deliver import Destinations, deliver, provenance_wanted
from builder.plan.stages import Plan, Stage, plan
from builder.progress.sinks import Log
from builder.progress.summary import StepRecorder
from builder.request import BuildRequest, BuildResult
from builder.session import PLATFORM, BuildSession
from builder.stage import StageBuilder
from grammar.errors import DockerfileError
from layers.image import ImageConfig
from layers.reference import Reference, parse_reference

if TYPE_CHECKING:
    from builder.supplychain.provenance import BuildFacts

# Build args Docker accepts without an ARG line (proxies, and the one the checks read).
_PREDEFINED = {"HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY",
               "http_proxy", "https_proxy", "ftp_proxy", "no_proxy", "all_proxy", CHECK_ARG}


def build(request: BuildRequest, log: Log) -> BuildResult:
    """Run a whole build. Raises DockerfileError (BuildError included) or LayerError. A rootless
    build moves the calling process into a user namespace first, for good."""
    if os.geteuid() != 0:
        from builder.sandbox import prepare
        prepare(request.isolation)
    running = Build(request, log)
    try:
        return running.run()
    except BaseException as error:
        for number in log.open_steps():
            log.failed(number, str(error) or type(error).__name__)
        raise
    finally:
        running.session.close()


class Build:
    """The order of a build: read, plan, build the target's stages, stamp, deliver."""

    def __init__(self, request: BuildRequest, log: Log) -> None:
        self.request = request
        self.log = log
        self.recorder = StepRecorder()
        log.add_sink(self.recorder)
        self.session = BuildSession(request, log)
        self.started = time.time()  # for provenance

    def run(self) -> BuildResult:
        """The build; an error about the Dockerfile comes with the lines around its place."""
        text, name = self._dockerfile_text()
        try:
            return self._run(text, name)
        except DockerfileError as error:
            raise error.in_source(text, name) from None

    def _run(self, text: str, name: str) -> BuildResult:
        session = self.session
        for notice in self.request.notices:
            self.log.warn(notice)
        dockerfile = session.parse(text, name)
        dockerfile_path = "-" if self.request.dockerfile_text is not None \
            else self.request.dockerfile
        findings = dockerfile_checks(dockerfile, self.request.context, dockerfile_path,
                                     self.request.build_args)
        for finding in findings:
            self.log.warn(finding.render(name))
        if (error := failure(dockerfile, findings, self.request.build_args)) is not None:
            raise error
        planned = plan(dockerfile)
        stages = StageBuilder(session, dockerfile, planned)
        tags = tuple(self._tag(t) for t in self.request.tags)
        session.import_caches()
        target = planned.target(self.request.target)
        self._build_together(stages, planned, target)
        state = stages.stage(target)
        if self.request.labels:
            labels = dict(state.image.config.labels) | self.request.labels
            state = state.with_config(labels=tuple(labels.items()))
        image = self._stamped(state.image, stages)
        self._warn_unconsumed(stages.consumed)
        to = Destinations(self.request, self.log, session.blobs, session.images, session.cache,
                          session.registry, session.remote, session.early_output)
        facts = self._facts(text, name, stages) if provenance_wanted(self.request) else None
        done = deliver(image, tags, to, stages.exported(), stages.cache_mounts,
                       facts)
        return BuildResult(done.image_id, done.manifest_digest, tuple(t.familiar() for t in tags),
                           image.diff_ids, sum(b.size for b in done.blobs),
                           tuple(self.log.warnings), stages.misses, stages.hits,
                           time.monotonic() - session.started, tuple(b.size for b in done.blobs),
                           done.pushed, self.recorder.summary())

    def _build_together(self, stages: StageBuilder, planned: Plan, target: Stage) -> None:
        """Build the stages the target needs, those that need nothing of each other at the same
        time, when there are such and the build may (`max_parallelism`). Stages the graph
        cannot place (on or behind a cycle) are left to `stages.stage(target)`, which builds
        what is missing one at a time and refuses the cycle where it closes."""
        workers = self.request.max_parallelism or os.cpu_count() or 1
        if workers < 2 or len(planned.stages) < 2:
            return
        from builder.plan.graph import stage_graph
        from builder.stagepool import build_stages
        contexts = self.request.build_contexts
        if contexts:
            from builder.sources.baseimage import named_context
        known = {k: v for k, v in stages.global_args.items() if v is not None}

        def is_context(name: str) -> bool:
            return bool(contexts) and named_context(name, contexts) is not None
        graph = stage_graph(planned, known, stages.dockerfile.directives.escape, is_context)
        waves = graph.waves(target.index)
        if max(map(len, waves), default=0) < 2:
            return
        build_stages({i: graph.needs[i] for wave in waves for i in wave},
                     lambda i: stages.stage(planned.stages[i]), workers, self.log)

    def _facts(self, text: str, name: str, stages: StageBuilder) -> BuildFacts:
        """What --provenance records of this build."""
        from builder.supplychain.provenance import BuildFacts, base_material
        request = self.request
        return BuildFacts(
            text.encode("utf-8", "surrogateescape"), name, self._context_digest(),
            tuple(base_material(image_name, base.manifest_digest or base.image_id,
                                str(stages.session.platform))
                  for image_name, base in sorted(stages.bases.items())),
            request.build_args, request.target, str(PLATFORM), request.source_date_epoch,
            self.started, time.time())

    def _context_digest(self) -> str:
        """The context's digest for provenance, remembered by the signature of its walk (a
        push of an unchanged 20,000-file context spent 0.1 s reading the memo to find it)."""
        from builder.cache.sources import context_signature
        from builder.supplychain.provenance import context_digest
        session = self.session
        signed = context_signature(session.context)
        digest = session.cache.scanned(signed)
        if digest is None:
            digest = context_digest(session.context,
                                    session.memos(self.request.context, fresh=True))
            session.cache.remember_scan(signed, digest)
        return digest

    def _stamped(self, image: ImageConfig, stages: StageBuilder) -> ImageConfig:
        """The image with its `created` time. When every step was reused, the time is the one the
        reused result was made at (not now), so a no-op rebuild gives the same image ID, as
        BuildKit's does; the config-only steps re-applied on the way get that time too."""
        created = self.session.created
        if stages.misses or not stages.reused_created:
            return replace(image, created=created)
        # The reused results' own times: never the base image's older history entries.
        when = max(stages.reused_created)
        history = tuple(replace(h, created=when) if h.created == created else h
                        for h in image.history)
        return replace(image, created=when, history=history)

    def _dockerfile_text(self) -> tuple[str, str]:
        if self.request.dockerfile_text is not None:
            return self.request.dockerfile_text, os.path.basename(self.request.dockerfile or "Dockerfile")
        path = self.request.dockerfile or os.path.join(self.request.context, "Dockerfile")
        try:
            with open(path, encoding="utf-8", errors="surrogateescape") as handle:
                return handle.read(), os.path.basename(path)
        except OSError as error:
            raise DockerfileError(f"cannot read the Dockerfile: {error.strerror}: {path}",
                                  file=os.path.basename(path)) from None

    def _tag(self, text: str) -> Reference:
        try:
            return parse_reference(text)
        except ValueError as error:
            raise DockerfileError(f"-t {text}: {error}") from None

    def _warn_unconsumed(self, consumed: set[str]) -> None:
        unused = sorted(set(self.request.build_args) - consumed - _PREDEFINED)
        if unused:
            self.log.warn(f"build-arg{'s' if len(unused) > 1 else ''} not consumed by any ARG: "
                          + ", ".join(unused))
