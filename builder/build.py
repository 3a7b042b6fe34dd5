"""One build: Dockerfile + context -> image, stage by stage, written as a tarball.

`build()` is the programmatic entry point the CLI uses. The `Build` object guards what a build
accumulates (stage results, warnings, consumed build args); everything it calls is a function of
its arguments.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from functools import cached_property, partial
from typing import TYPE_CHECKING

from builder import metadata
from builder.context import load_ignore
from builder.errors import BuildError, NotSupported, describe_os_error
from builder.export import layer_blobs, write_output
from builder.limits import Limits
from builder.plan import Plan, Stage, plan
from builder.progress import Log
from builder.sourcetree import ContextTree, StageTree, Tree
from builder.state import DEFAULT_PATH, BuildArgs, StageState
from builder.cachedir import secure_cache_dir
from builder.cachekey import Inputs, step_key
from builder.sourcedigest import SourceScan, hash_files, manifest as source_manifest
from builder.sourcedigest import signature as source_signature
from builder.sourcedigest import scan as scan_sources
from builder.cacheindex import StepRecord
from layers.cachemanifest import CacheRecord
from builder.stepcache import StepCache
from builder.summary import StepRecorder, StepSummary
from builder.steps import StepEnv, select_copy, workdir, write_copy
from grammar import instructions as ins, stored
from grammar.errors import DockerfileError
from grammar.expand import expand_word
from grammar.suggest import suggest
from grammar.lint import lint
from layers.archive import ArchiveImage, manifest_of
from layers.compression import Compression
from layers.errors import LayerError
from layers.imagestore import ImageStore
from layers.image import ContainerConfig, History, ImageConfig, chain_ids, sha256_digest
from layers.platform import host_platform
from layers.reference import Reference, parse_reference
from layers.scratch import private_dir, sweep
from layers.snapshots import SnapshotStore
from layers.tarwriter import LayerWriter
from layers.union import UnionView

if TYPE_CHECKING:
    from builder.baseimage import BaseImage, ContextSource, DirectorySource
    from builder.cachespec import CacheSpec
    from builder.pull import Puller
    from builder.remotelayers import RemoteLayers
    from layers.imagestore import StoredImage
    from layers.registry.transport import Session
    from builder.run import RunEnv
    from builder.sandbox import Sandbox
    from builder.sandbox.confine import Confinement

# Imported where used, so a build imports only what its Dockerfile needs (start-up is most of a
# cached rebuild): builder.baseimage (FROM an image), builder.run and builder.sandbox (RUN),
# layers.overlaydiff (a RUN's layer), grammar.parser and lark (a Dockerfile not parsed before).

_PLATFORM = host_platform()
_ARCH = _PLATFORM.architecture
# Build args Docker accepts without an ARG line (proxies), and the automatic platform ARGs.
_PREDEFINED = {"HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY",
               "http_proxy", "https_proxy", "ftp_proxy", "no_proxy", "all_proxy"}
_PLATFORM_ARGS = {"TARGETPLATFORM": f"linux/{_ARCH}", "TARGETOS": "linux", "TARGETARCH": _ARCH,
                  "TARGETVARIANT": "", "BUILDPLATFORM": f"linux/{_ARCH}", "BUILDOS": "linux",
                  "BUILDARCH": _ARCH, "BUILDVARIANT": ""}


@dataclass(frozen=True)
class BuildRequest:
    context: str
    dockerfile: str | None = None
    dockerfile_text: str | None = None
    tags: tuple[str, ...] = ()
    build_args: dict[str, str | None] = field(default_factory=dict)
    target: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    output: str | None = "image.tar"
    compression: Compression = Compression.NONE
    cache_dir: str = ""
    iidfile: str | None = None
    source_date_epoch: int | None = None
    network: str = "host"
    no_cache: bool = False
    no_cache_filter: tuple[str, ...] = ()
    build_contexts: dict[str, ContextSource] = field(default_factory=dict)
    limits: Limits = Limits()
    pull: bool = False
    push: bool = False
    insecure_registries: frozenset[str] = frozenset()
    registry_timeout: float = 120.0  # seconds a registry request may take, retries included
    cache_from: tuple[CacheSpec, ...] = ()
    cache_to: tuple[CacheSpec, ...] = ()
    isolation: str = "auto"  # or namespaces, rootless, chroot (builder/sandbox)
    entitlements: frozenset[str] = frozenset()  # --allow: security.insecure, network.host
    docker_load: str | None = None  # the docker CLI to load the image into (--load)
    seccomp: bool = True  # Docker's default profile for RUN; --security-opt seccomp=unconfined


@dataclass(frozen=True)
class BuildResult:
    """What a build made. `image_id` is the config's digest (what `docker images` shows),
    `manifest_digest` that of the tarball's manifest ("" without one), `layers` the diff IDs and
    `layer_sizes` the sizes of the layers as the tarball holds them (`size` their sum); `pushed`
    pairs each pushed reference with the digest of its manifest in the registry."""

    image_id: str
    manifest_digest: str
    tags: tuple[str, ...]
    layers: tuple[str, ...]
    size: int
    warnings: tuple[str, ...]
    steps_run: int = 0
    steps_cached: int = 0
    seconds: float = 0.0
    layer_sizes: tuple[int, ...] = ()
    pushed: tuple[tuple[str, str], ...] = ()
    steps: tuple[StepSummary, ...] = ()


@dataclass(frozen=True)
class CopyFrom:
    """What COPY --from=NAME reads, resolved: an earlier stage, an image (of a build context, the
    local store or a registry), or a directory build context."""

    name: str
    stage: Stage | None = None
    image: BaseImage | None = None
    directory: DirectorySource | None = None


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
        running.cache.close()


def _arg_inputs(instruction: ins.Instruction, after: StageState) -> tuple[tuple[str, str], ...]:
    """An ARG's inputs are the values it gives (a changed --build-arg reaches only the steps after
    the ARG that declares it)."""
    if not isinstance(instruction, ins.Arg):
        return ()
    scope = after.variables()
    return tuple((f"ARG {d.name}", scope.get(d.name, "(unset)")) for d in instruction.args)


class Build:
    def __init__(self, request: BuildRequest, log: Log) -> None:
        self.request = request
        self.log = log
        self.recorder = StepRecorder()
        log.sinks.append(self.recorder)
        secure_cache_dir(request.cache_dir)
        self.images = ImageStore(request.cache_dir)
        self.blobs = self.images.blobs
        self.snapshots = SnapshotStore(request.cache_dir)
        sweep(request.cache_dir, background=True)  # what builds killed earlier left
        self.states: dict[int, StageState] = {}
        self.consumed: set[str] = set()
        epoch = request.source_date_epoch
        moment = datetime.fromtimestamp(epoch if epoch is not None else time.time(), timezone.utc)
        self.now = int(moment.timestamp())
        self.created = moment.strftime("%Y-%m-%dT%H:%M:%S") + (
            "Z" if epoch is not None else f".{moment.microsecond:06d}000Z")
        self.started = time.monotonic()
        self.plan: Plan | None = None
        self.cache = StepCache(request.cache_dir, self.blobs, request.no_cache,
                               frozenset(request.no_cache_filter))
        self._file_memos: dict[str, dict[str, tuple]] = {}
        self._directory_trees: dict[str, ContextTree] = {}
        self.reused_created: list[str] = []
        self.exported: dict[str, CacheRecord] = {}  # every step, for --cache-to
        self.remote: RemoteLayers | None = None
        self._puller: Puller | None = None
        self.slot_prefix = f"{request.context}|{request.dockerfile or '-'}"
        self._chosen_sandbox: Sandbox | None = None
        self._confinement: Confinement | None = None
        self.dockerfile: ins.Dockerfile | None = None

    def run(self) -> BuildResult:
        """The build; an error about the Dockerfile comes with the lines around its place."""
        text, name = self._dockerfile_text()
        try:
            return self._run(text, name)
        except DockerfileError as error:
            raise error.in_source(text, name) from None

    def _run(self, text: str, name: str) -> BuildResult:
        self.dockerfile = self._parse(text, name)
        for finding in lint(self.dockerfile):
            self.log.warn(finding.render(name))
        self.plan = plan(self.dockerfile)
        self.global_args = self._global_args()
        tags = tuple(self._tag(t) for t in self.request.tags)
        self._import_caches()
        target = self.plan.target(self.request.target)
        state = self.stage(target)
        if self.request.labels:
            labels = dict(state.image.config.labels) | self.request.labels
            state = state.with_config(labels=tuple(labels.items()))
        image = self._stamped(state.image)
        self._warn_unconsumed()
        if self.request.compression is Compression.ZSTD and (self.request.output
                                                              or self.request.docker_load):
            self.log.warn("zstd layers need Docker 23.0 or newer to load (docker load of "
                          "Docker 20.10 refuses them)")
        config = image.to_bytes()
        image_id = sha256_digest(config)
        self._fetch(image.diff_ids)
        blobs = layer_blobs(self.blobs, image, self.request.compression)
        manifest_digest = ""
        if self.request.output:
            archive = ArchiveImage(config, blobs, tuple(tags))
            number = self.log.step(f"exporting to {self.request.output}")
            identity = sha256_digest(manifest_of(archive) + repr(tags).encode())
            if self.cache.output_holds(self.request.output, identity):
                self.log.info(number, "unchanged: it already holds this image")
                manifest_digest = sha256_digest(manifest_of(archive))
            else:
                manifest_digest = write_output(self.request.output, archive,
                                               partial(self.log.progress, number))
                self.cache.remember_output(self.request.output, identity)
            self.log.done(number)
        if self.request.docker_load:
            loaded = self._docker_load(ArchiveImage(config, blobs, tuple(tags)))
            manifest_digest = manifest_digest or loaded
        if tags:
            self.images.put(config, refs=tags)
        self.cache.settle()
        pushed = self._push(config, tags) if self.request.push else ()
        self._export_caches()
        if self.request.iidfile:
            with open(self.request.iidfile, "w") as handle:
                handle.write(image_id)
        return BuildResult(image_id, manifest_digest, tuple(t.familiar() for t in tags),
                           image.diff_ids, sum(b.size for b in blobs), tuple(self.log.warnings),
                           self.cache.misses, self.cache.hits, time.monotonic() - self.started,
                           tuple(b.size for b in blobs), pushed, self.recorder.summary())

    # -- registries and shared caches ----------------------------------------------------------

    def _session(self, ref: Reference) -> Session:
        from layers.registry import session_for
        return session_for(ref, insecure_registries=self.request.insecure_registries,
                           warn=self.log.alert, timeout=self.request.registry_timeout)

    def _find_image(self, ref: Reference) -> StoredImage | None:
        """FROM's lookup: the local store, then the registry (builder/pull.py)."""
        if self._puller is None:
            from builder.pull import Puller
            self._puller = Puller(self.images, self._session, _PLATFORM, self.request.pull,
                                  self.log)
        return self._puller.image(ref)

    def _import_caches(self) -> None:
        if not self.request.cache_from:
            return
        from builder.cachetransfer import import_cache
        from builder.remotelayers import RemoteLayers
        self.remote = RemoteLayers(self.blobs)
        self.cache.remote_available = self.remote.available
        for spec in self.request.cache_from:
            number = self.log.step(f"importing cache from {spec.describe()}")
            try:
                imported = import_cache(spec, self._session)
            except LayerError as error:
                self.log.warn(f"cache from {spec.describe()} not used: {error}")
            else:
                self.cache.imported.update((r.key, r) for r in imported.records)
                self.cache.imported_manifests.update(imported.manifests)
                self.remote.add(imported.layers)
                self.log.info(number, f"{len(imported.records)} steps, "
                                      f"{len(imported.layers)} layers")
            self.log.done(number)

    def _export_caches(self) -> None:
        if not self.request.cache_to:
            return
        from builder.cachetransfer import export_cache
        remote = self.remote.known if self.remote else {}
        for spec in self.request.cache_to:
            number = self.log.step(f"exporting cache to {spec.describe()}")
            try:
                records = tuple(self.exported.values())
                digest = export_cache(spec, records, self.cache.source_manifests(records),
                                      self.blobs, remote, self._session)
            except LayerError as error:
                if not spec.ignore_error:
                    raise LayerError(f"--cache-to {spec.text}: {error}") from None
                self.log.warn(f"cache not exported to {spec.describe()}: {error}")
            else:
                self.log.info(number, f"{len(self.exported)} steps, manifest {digest}")
            self.log.done(number)

    def _push(self, config: bytes, tags: tuple[Reference, ...]) -> tuple[tuple[str, str], ...]:
        from builder.push import push
        pushed = []
        for ref in tags:
            number = self.log.step(f"pushing {ref.familiar()}")
            digest = push(ref, config, self.blobs, self.request.compression, self._session(ref))
            self.log.info(number, f"{ref.familiar()}@{digest}")
            self.log.done(number)
            pushed.append((ref.familiar(), digest))
        return tuple(pushed)

    def _docker_load(self, archive: ArchiveImage) -> str:
        """--load: the tarball just written, else the archive streamed into `docker load`
        (then the manifest digest is returned)."""
        from builder.dockerload import load_archive, load_file
        number = self.log.step("exporting to docker (docker load)")
        if self.request.output:
            digest, said = "", load_file(self.request.docker_load, self.request.output)
        else:
            digest, said = load_archive(self.request.docker_load, archive)
        for line in said:
            self.log.info(number, line)
        self.log.done(number)
        return digest

    def _fetch(self, diff_ids: tuple[str, ...]) -> None:
        """Bring the imported layers among `diff_ids` here before they are read."""
        if self.remote is not None:
            self.remote.ensure(diff_ids)

    def _layers(self, state: StageState) -> list[str]:
        """The snapshot directories of a state's layers, lowest first."""
        self._fetch(state.image.diff_ids)
        return self.snapshots.ensure(state.image.diff_ids, self.blobs.path, self._unpacking)

    @contextlib.contextmanager
    def _unpacking(self, diff_id: str, size: int):
        """A layer unpacked into its snapshot is a step of its own (a span on the trace's unpacks
        track, a bar of files and bytes in the live view, a line in the plain log): a base
        image's first use costs seconds, and they should show. A failure fails the open step."""
        number = self.log.step(f"unpacking {diff_id[:19]}")
        started, entries = time.monotonic(), [0]

        def progress(count: int, done: int) -> None:
            entries[0] = count
            self.log.progress(number, done, size, count)

        yield progress
        self.log.info(number, f"{entries[0]:,} entries, {size / 1e6:.1f}MB in "
                              f"{time.monotonic() - started:.1f}s")
        self.log.done(number)

    def _parse(self, text: str, name: str) -> ins.Dockerfile:
        """The parse of a Dockerfile, kept in the cache index (grammar/stored.py): a rebuild
        neither imports lark nor runs the parser. Only successful parses are kept."""
        key = stored.key(text, name)
        body = self.cache.stored_parse(key) if key else None
        if body is not None:
            try:
                return stored.decode(body)
            except ValueError:
                pass
        from grammar.parser import parse
        dockerfile = parse(text, name)
        body = stored.encode(dockerfile) if key else None
        if body is not None:
            self.cache.store_parse(key, body)
        return dockerfile

    def _stamped(self, image: ImageConfig) -> ImageConfig:
        """The image with its `created` time. When every step was reused, the time is the one the
        reused result was made at (not now), so a no-op rebuild gives the same image ID, as
        BuildKit's does; the config-only steps re-applied on the way get that time too."""
        if self.cache.misses or not self.reused_created:
            return replace(image, created=self.created)
        # The reused results' own times: never the base image's older history entries.
        when = max(self.reused_created)
        history = tuple(replace(h, created=when) if h.created == self.created else h
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

    def _global_args(self) -> dict[str, str | None]:
        values: dict[str, str | None] = dict(_PLATFORM_ARGS)
        given = self.request.build_args
        for instruction in self.plan.meta_args:
            for decl in instruction.args:
                self.consumed.add(decl.name)
                if given.get(decl.name) is not None:
                    values[decl.name] = given[decl.name]
                elif decl.default is not None:
                    known = {k: v for k, v in values.items() if v is not None}
                    values[decl.name] = self._located(instruction, lambda: expand_word(
                        decl.default, known, self.dockerfile.directives.escape))
                else:
                    values.setdefault(decl.name, None)
        return values

    def _warn_unconsumed(self) -> None:
        unused = sorted(set(self.request.build_args) - self.consumed - _PREDEFINED)
        if unused:
            self.log.warn(f"build-arg{'s' if len(unused) > 1 else ''} not consumed by any ARG: "
                          + ", ".join(unused))

    def _located(self, instruction: ins.Instruction, action):
        """Run a step; an error without a place (a LayerError, an OSError) gets the instruction's
        line."""
        try:
            return action()
        except DockerfileError as error:
            raise error.located(instruction.span, self.dockerfile.source_line(instruction.span.line))
        except LayerError as error:
            raise BuildError.at(instruction, f"{instruction.keyword}: {error}",
                                self.dockerfile.source_line(instruction.span.line)) from None
        except OSError as error:
            if error.errno is None:  # pybuild's own words already (a sandbox that cannot work)
                raise
            message, hint = describe_os_error(error)
            raise BuildError.at(instruction, f"{instruction.keyword}: {message}",
                                self.dockerfile.source_line(instruction.span.line),
                                hint=hint) from None

    # -- stages ---------------------------------------------------------------------------

    def stage(self, stage: Stage) -> StageState:
        """The final state of a stage, built once per build whoever asks first."""
        if stage.index not in self.states:
            state = self._base(stage)
            total = len(stage.instructions)
            for position, instruction in enumerate(stage.instructions, start=1):
                state = self._step(stage, state, instruction, f"[{stage.label} {position}/{total}]",
                                   str(position))
            self.states[stage.index] = state
        return self.states[stage.index]

    def _base(self, stage: Stage) -> StageState:
        escape = self.dockerfile.directives.escape
        known = {k: v for k, v in self.global_args.items() if v is not None}
        source = stage.from_
        image_name = self._located(source, lambda: expand_word(source.image, known, escape))
        if not image_name:
            raise BuildError.at(source, f"base name ({source.image}) should not be blank",
                                self._line(source))
        if source.platform:
            wanted = self._located(source, lambda: expand_word(source.platform, known, escape))
            if wanted not in (f"linux/{_ARCH}", "linux"):
                raise BuildError.at(source, f"FROM --platform={wanted}: only the host platform "
                                    f"(linux/{_ARCH}) can be built", self._line(source))
        number = self.log.step(f"[{stage.label}] FROM {image_name}", stage.label)
        if image_name == "scratch":
            image = ImageConfig(config=ContainerConfig(env=(f"PATH={DEFAULT_PATH}",), working_dir="/"),
                                architecture=_ARCH)
            state = StageState(image, scope=tuple(image.config.env_dict().items()), escape=escape)
            origin = ("base image scratch", f"scratch {_ARCH}")
        else:
            parent = self.plan.find(image_name, stage.index)
            if parent is None or image_name in self.request.build_contexts:
                from builder.baseimage import resolve_base
                base = self._located(source, lambda: resolve_base(
                    image_name, self.images, self.request.build_contexts, self._find_image))
                self.log.info(number, f"from {base.origin}")
                image = replace(base.config, created="")
                if "PATH" not in image.config.env_dict():  # as BuildKit: `docker import` images
                    image = replace(image, config=image.config.with_env("PATH", DEFAULT_PATH))
                state = StageState(image, scope=tuple(image.config.env_dict().items()), escape=escape)
                origin = (f"base image {image_name}", base.image_id)
            else:
                inherited = self.stage(parent)
                state = StageState(replace(inherited.image, created=""), scope=inherited.scope,
                                   escape=escape)
                origin = (f"base stage {parent.label}", inherited.chain_key())
        epoch = self.request.source_date_epoch
        state = replace(state, key="", pending=(
            origin, ("SOURCE_DATE_EPOCH", "" if epoch is None else str(epoch))))
        self.log.done(number)
        triggers = state.image.config.on_build
        if triggers:
            state = state.with_config(on_build=())
            for number_, trigger in enumerate(triggers):
                trigger_file = f"ONBUILD trigger of {image_name}"
                for instruction in self._parse(trigger, trigger_file).instructions:
                    state = self._step(stage, state, instruction, f"[{stage.label}] ONBUILD",
                                       f"onbuild-{number_}")
        return state

    def _line(self, instruction: ins.Instruction) -> str:
        return self.dockerfile.source_line(instruction.span.line)

    def _step(self, stage: Stage, state: StageState, instruction: ins.Instruction,
              title: str, position: str) -> StageState:
        handler = metadata.METADATA.get(type(instruction))
        if handler is not None:
            if isinstance(instruction, ins.Arg):
                self.consumed.update(d.name for d in instruction.args)
            args = BuildArgs(self.request.build_args, self.global_args)
            after = self._located(instruction, lambda: handler(state, instruction, args))
            folded = ((f"step {len(state.pending)}", instruction.original),) + _arg_inputs(instruction, after)
            after = after.with_history(History(instruction.original, self.created, empty_layer=True))
            return replace(after, pending=state.pending + folded)
        source = self._copy_from(state, instruction, stage)
        number = self.log.step(f"{title} {instruction.original}", stage.label)
        if source is not None and source.image is not None:
            self.log.info(number, f"from {source.image.origin}")
        env = self._step_env(source)
        selection, scan, signature = None, None, None
        items: list[tuple[str, str]] = [("instruction", instruction.original)]
        slot = f"{self.slot_prefix}|{stage.label}|{position}"
        keyed = source is not None and source.directory is None
        if keyed:
            # A stage's key or an image's ID stands for its files, which are selected only on a
            # miss: reading them may mean fetching or unpacking layers.
            items.append(self._from_input(source))
        elif isinstance(instruction, ins.Copy):
            selection = self._located(instruction, lambda: select_copy(state, instruction, env))
            # Sources whose lstats are as at an earlier build have that build's manifest: a hit
            # needs no memo and no rows.
            signature = source_signature(selection)
            known = self.cache.scanned(signature)
            if known is not None:
                inputs = Inputs(state.pending + (*items, ("sources", known)))
                key = step_key(state.key, inputs)
                hit = self.cache.lookup(key, stage.label, slot, state.key, inputs)
                if hit is not None:
                    return self._reuse(number, hit, state, key)
            scan = self._located(instruction, lambda: scan_sources(selection, self._memos(
                source.directory.path if source is not None else self.request.context)))
        elif isinstance(instruction, ins.Run):
            items.append(("network", instruction.network or self.request.network))
        speculate = scan is not None and scan.unknown and not (
            selection.extract or scan.cheap_to_hash_first())
        if not speculate:
            if scan is not None:
                digests = self._located(instruction, lambda: hash_files(
                    found for _, found in scan.unknown))
                items.append(("sources", self._learn_sources(scan, digests, signature)))
            inputs = Inputs(state.pending + tuple(items))
            key = step_key(state.key, inputs)
            hit = self.cache.lookup(key, stage.label, slot, state.key, inputs)
            if hit is not None:
                return self._reuse(number, hit, state, key)
            self.log.missed(number, self.cache.reason(slot, state.key, inputs, stage.label))
        if keyed:
            selection = self._located(instruction, lambda: select_copy(state, instruction, env))
        if isinstance(instruction, ins.Run):
            from builder.run import run
            after, diff_id = self._located(instruction, lambda: run(state, instruction,
                                                                    self._run_env(number)))
        elif isinstance(instruction, ins.Workdir):
            after, diff_id = self._located(instruction, lambda: workdir(state, instruction, env))
        else:
            unknown = frozenset(found.host for _, found in scan.unknown) if speculate else frozenset()
            diff_id, digests = self._located(instruction, lambda: write_copy(state, selection, env,
                                                                             unknown))
            after = state
            if speculate:
                # A cold context: its files were hashed while the layer was written (one read).
                items.append(("sources", self._learn_sources(scan, digests, signature)))
                inputs = Inputs(state.pending + tuple(items))
                key = step_key(state.key, inputs)
                self.log.missed(number, self.cache.reason(slot, state.key, inputs, stage.label))
        if diff_id is not None:
            self.log.layer(number, diff_id, os.path.getsize(self.blobs.path(diff_id)))
        self.log.done(number)
        after = after.with_history(History(instruction.original, self.created,
                                           empty_layer=diff_id is None), diff_id)
        after = replace(after, key=key, pending=())
        self.exported[key] = CacheRecord(key, state.key, inputs.items, after.to_json())
        self.cache.record(key, state.key, slot, inputs, diff_id, after.to_json())
        return after

    def _copy_from(self, state: StageState, instruction: ins.Instruction,
                   stage: Stage) -> CopyFrom | None:
        """What a COPY --from names (as written, expanded), resolved before the COPY's own log
        line so the log reads in order (an earlier stage is built, an image perhaps pulled);
        None for any other step. As in BuildKit, a --build-context of that name wins over a
        stage of that name; then an earlier stage (AS name or index); then an image, found as
        FROM finds one."""
        if not isinstance(instruction, ins.Copy) or isinstance(instruction, ins.Add) \
                or not instruction.from_:
            return None
        name = self._located(instruction, lambda: state.expand(instruction.from_))
        contexts = self.request.build_contexts
        if contexts:
            from builder.baseimage import DirectorySource, named_context
            named = named_context(name, contexts)
            if named is not None and isinstance(named[1], DirectorySource):
                return CopyFrom(name, directory=named[1])
        else:
            named = None
        if named is None:
            source = self.plan.find(name, stage.index)
            if source is not None:
                self.stage(source)
                return CopyFrom(name, stage=source)
            self._refuse_stage_reference(name, instruction, stage)
        from builder.baseimage import resolve_base
        try:
            image = self._located(instruction, lambda: resolve_base(
                name, self.images, contexts, self._find_image, copy=True))
        except BuildError as error:
            names = [s.name for s in self.plan.stages[:stage.index] if s.name]
            meant = suggest(name, names, case_sensitive=False) if named is None else None
            if meant is None:
                raise
            raise BuildError.at(instruction, error.message, self._line(instruction),
                                hint=f"did you mean the stage {meant}?") from None
        return CopyFrom(name, image=image)

    def _refuse_stage_reference(self, name: str, instruction: ins.Instruction,
                                stage: Stage) -> None:
        """A --from that names no earlier stage but looks like one is not taken for an image:
        an index (Docker: `invalid stage index`), the stage itself, or a later stage."""
        named = self.plan.find(name, len(self.plan.stages))
        if named is not None and named.index == stage.index:
            raise BuildError.at(instruction, f"COPY --from={name}: a stage cannot copy from "
                                "itself", self._line(instruction))
        if named is not None:
            raise NotSupported.at(instruction, f"COPY --from={name}: the stage {named.label} is "
                                  "defined after this one; copying from a later stage is not "
                                  "supported yet", self._line(instruction),
                                  hint="move that stage above this one")
        if name.isdigit():
            raise BuildError.at(instruction, f"COPY --from={name}: invalid stage index: only "
                                f"{stage.index} stage{'s are' if stage.index != 1 else ' is'} "
                                "defined before this one", self._line(instruction))

    def _from_input(self, source: CopyFrom) -> tuple[str, str]:
        """The cache input that stands for the files of a stage or an image COPY --from reads:
        the stage's key, or the image's ID (its config's digest, which names its layers)."""
        if source.stage is not None:
            return f"from stage {source.name}", self.stage(source.stage).chain_key()
        return f"from image {source.name}", source.image.image_id

    def _reuse(self, number: int, hit: StepRecord, state: StageState, key: str) -> StageState:
        """The state a cache hit recorded; its time is kept for `_stamped`."""
        self.log.cached(number)
        if hit.diff_id is not None and self.blobs.has(hit.diff_id):
            self.log.layer(number, hit.diff_id, os.path.getsize(self.blobs.path(hit.diff_id)))
        restored = StageState.from_json(hit.state, state.escape, key)
        self.exported[key] = CacheRecord(key, hit.parent, hit.inputs.items, hit.state)
        if restored.image.history:
            self.reused_created.append(restored.image.history[-1].created)
        return restored

    def _learn_sources(self, scan: SourceScan, digests: dict[str, str],
                       signature: str | None) -> str:
        """Complete the scan with `digests` and remember what was learned; returns the
        manifest's digest."""
        learned = scan.fill(digests)
        manifest, text = source_manifest(scan.rows)
        self.cache.remember(learned, manifest, text)
        self.cache.remember_scan(signature, manifest)
        return manifest

    def _memos(self, root: str):
        """The content digests remembered for the files under `root` (the context's, or a
        directory build context's), read in one query per build."""
        if root not in self._file_memos:
            self._file_memos[root] = self.cache.file_memos(root.rstrip("/") + "/")
        return self._file_memos[root]

    @cached_property
    def temp_dir(self) -> str:
        """This build's temp space (layers/scratch.py), made on first use: a no-op rebuild
        makes none."""
        return private_dir(self.request.cache_dir)

    def _step_env(self, source: CopyFrom | None) -> StepEnv:
        return StepEnv(context=self._context(), image_view=self._view,
                       from_tree=lambda: self._from_tree(source),
                       commit_layer=self._commit_layer, now=self.now,
                       temp_dir=lambda: self.temp_dir)

    def _run_env(self, number: int) -> RunEnv:
        from builder.run import RunEnv
        return RunEnv(sandbox=self._sandbox, scratch_dir=self.temp_dir,
                      lowerdirs=self._layers,
                      commit_upper=self._commit_upper, network=self.request.network,
                      insecure_allowed="security.insecure" in self.request.entitlements,
                      output=lambda chunk: self.log.output(number, chunk),
                      limits=self.request.limits, warn=self.log.warn,
                      confinement=self._confined)

    def _sandbox(self) -> Sandbox:
        """The isolation strategy, chosen once per build on first use; the log says which."""
        if self._chosen_sandbox is None:
            from builder.sandbox import choose_sandbox
            choice = choose_sandbox(self.request.isolation, self.temp_dir)
            self._chosen_sandbox = choice.sandbox
            self.log.note(f"sandbox: {choice.sandbox.name} ({choice.reason})")
            if choice.warning:
                self.log.warn(choice.warning)
        return self._chosen_sandbox

    def _confined(self) -> Confinement:
        """Docker's capabilities and seccomp profile for RUN, compiled once per build; the log
        warns once about what cannot be had here."""
        if self._confinement is None:
            from builder.sandbox.confine import prepare
            self._confinement, warnings = prepare(self.request.seccomp)
            for warning in warnings:
                self.log.warn(warning)
        return self._confinement

    def _commit_upper(self, state: StageState, upper: str) -> str:
        """The layer of a RUN from its overlay upper dir; the upper dir becomes its snapshot."""
        from layers.overlaydiff import write_upper
        lower = self._view(state)
        diff_id = self._commit_layer(lambda writer: write_upper(upper, writer, lower))
        chain = chain_ids(state.image.diff_ids + (diff_id,))[-1]
        self.snapshots.adopt(chain, upper)
        return diff_id

    def _context(self) -> Tree:
        if not hasattr(self, "_context_tree"):
            dockerfile = "-" if self.request.dockerfile_text is not None else self.request.dockerfile
            self._context_tree = ContextTree(self.request.context,
                                             load_ignore(self.request.context, dockerfile))
        return self._context_tree

    def _view(self, state: StageState) -> UnionView:
        return UnionView(self._layers(state))

    def _from_tree(self, source: CopyFrom | None) -> Tree | None:
        """The files COPY --from reads: a stage's or an image's snapshots (unpacked here, on a
        miss), or a directory build context with its own .dockerignore."""
        if source is None:
            return None
        if source.stage is not None:
            return StageTree(self._view(self.stage(source.stage)))
        if source.image is not None:
            layers = self.snapshots.ensure(source.image.diff_ids, self.blobs.path,
                                           self._unpacking)
            return StageTree(UnionView(layers), f"the image {source.name}")
        return self._directory_tree(source)

    def _directory_tree(self, source: CopyFrom) -> ContextTree:
        directory = source.directory
        tree = self._directory_trees.get(directory.path)
        if tree is None:
            if not os.path.isdir(directory.path):
                raise BuildError(f"COPY --from={source.name}: the build context "
                                 f"{directory.text} is not a directory")
            tree = ContextTree(directory.path, load_ignore(directory.path, "-"),
                               f"the build context {source.name}")
            self._directory_trees[directory.path] = tree
        return tree

    def _commit_layer(self, write) -> str:
        """Write a layer tar into the blob store (named by its diff ID) and return the diff ID."""
        with self.blobs.temp() as (handle, temp_path):
            writer = LayerWriter(handle, clamp_mtime=self.request.source_date_epoch)
            write(writer)
            digest = writer.finish()
        self.blobs.commit(temp_path, digest.diff_id)
        return digest.diff_id

