"""What one build holds while it runs, whatever its Dockerfile: the stores, the step cache, the
registries and the layers imported from them, the sandbox, temp space and the build's clock.

Each resource is made on first use (a no-op rebuild makes no temp dir, chooses no sandbox, imports
no registry code) and guarded here, so the stage builder and the delivery only ask for them: made
once even when stages built at the same time ask for it together.
"""
from __future__ import annotations

import os
import threading
import time
from datetime import datetime, timezone
from functools import partial
from typing import TYPE_CHECKING, Callable, TypeVar

from builder.cache.root import CacheRoot, secure_cache_dir
from builder.cache.steps import StepCache
from builder.errors import BuildError
from builder.progress.sinks import Log
from builder.progress.unpacks import layer_steps
from builder.plan.state import StageState
from builder.request import BuildRequest
from builder.sources.context import load_ignore
from builder.sources.tree import ContextTree, Tree
from builder.units import human_size
from grammar import instructions as ins, stored
from layers.compression import Compression
from layers.errors import LayerError
from layers.image import chain_ids
from layers.imagestore import ImageStore
from layers.platform import Platform, host_platform, parse_platform
from layers.reference import Reference
from layers.scratch import private_dir, sweep
from layers.snapshots import SnapshotStore
from layers.streamunpack import WrittenSnapshot
from layers.tarwriter import LayerWriter
from layers.union import UnionView

if TYPE_CHECKING:
    from builder.output.earlytar import EarlyTarball
    from builder.sources.download import Downloads
    from builder.sources.gitrepo import GitSources
    from builder.cache.remote import RemoteLayers
    from builder.cache.transfer import ImportedCache
    from builder.sandbox.confine import Confinement
    from builder.sandbox.spec import Sandbox
    from builder.sources.baseimage import DirectorySource
    from builder.sources.pull import Puller
    from builder.sources.sshagent import SshAgents
    from builder.steps.mounts import MountEnv
    from builder.steps.run import RunEnv
    from layers.cachemanifest import MountBlob
    from layers.imagestore import StoredImage
    from layers.registry.transport import Session
    from layers.rootpool import RootPool

# Imported where used, so a build imports only what its Dockerfile needs (start-up is most of a
# cached rebuild): builder.sources.baseimage (FROM an image), builder.steps.run and
# builder.sandbox (RUN), layers.overlaydiff (a RUN's layer), grammar.parser and lark (a
# Dockerfile not parsed before).

PLATFORM = host_platform()

_Made = TypeVar("_Made")


def made_once(make: Callable[[BuildSession], _Made]) -> property:
    """A session property made on first use, once whatever the threads that ask at the same time
    (functools.cached_property stopped locking in Python 3.12)."""
    name = make.__name__

    def get(session: BuildSession) -> _Made:
        with session.making:
            if name not in session.__dict__:
                session.__dict__[name] = make(session)
            return session.__dict__[name]
    return property(get, doc=make.__doc__)


class BuildSession:
    def __init__(self, request: BuildRequest, log: Log) -> None:
        self.request = request
        self.log = log
        # A layer unpacked into its snapshot is a step of its own (builder/progress/unpacks.py).
        self.unpacking = layer_steps(log, "unpacking")
        secure_cache_dir(request.cache_dir)
        self.images = ImageStore(request.cache_dir)
        self.blobs = self.images.blobs
        self.snapshots = SnapshotStore(request.cache_dir)
        sweep(request.cache_dir, background=True)  # what builds killed earlier left
        epoch = request.source_date_epoch
        moment = datetime.fromtimestamp(epoch if epoch is not None else time.time(), timezone.utc)
        self.now = int(moment.timestamp())
        self.created = moment.strftime("%Y-%m-%dT%H:%M:%S") + (
            "Z" if epoch is not None else f".{moment.microsecond:06d}000Z")
        self.started = time.monotonic()
        self.cache = StepCache(request.cache_dir, self.blobs, request.no_cache,
                               frozenset(request.no_cache_filter))
        self.remote: RemoteLayers | None = None
        self.slot_prefix = f"{request.context}|{request.dockerfile or '-'}"
        self._file_memos: dict[str, dict[str, tuple]] = {}
        self._directory_trees: dict[str, ContextTree] = {}
        self._pullers: dict[Platform, Puller] = {}
        self._chosen_sandbox: Sandbox | None = None
        self._confinement: Confinement | None = None
        self.making = threading.RLock()  # what is made on first use, once
        self._pulling = threading.Lock()  # one FROM lookup at a time: no image pulled twice

    def close(self) -> None:
        self.cache.close()
        if "ssh_agents" in self.__dict__:
            self.ssh_agents.close()
        if self.__dict__.get("early_output") is not None:
            self.early_output.close()  # a failed build's output file is removed, never placed

    @made_once
    def early_output(self) -> EarlyTarball | None:
        """The image tarball begun while the build runs (builder/output/earlytar.py): `-o FILE`,
        else the first `-o type=docker|oci,dest=FILE`; for a file of uncompressed layers (not
        stdout, /dev/null or a FIFO)."""
        from builder.output.earlytar import EarlyTarball
        request = self.request
        if request.output is not None:
            output, compression = request.output, request.compression
        else:
            output, compression = next(((spec.dest, spec.compression or request.compression)
                                        for spec in request.exports
                                        if spec.kind in ("docker", "oci") and spec.dest),
                                       (None, None))
        if output in (None, "-") or compression is not Compression.NONE \
                or (os.path.exists(output) and not os.path.isfile(output)):
            return None
        return EarlyTarball(output, self.blobs)

    # -- registries and shared caches ----------------------------------------------------------

    def registry(self, ref: Reference) -> Session:
        from layers.registry.sessions import session_for
        return session_for(ref, insecure_registries=self.request.insecure_registries,
                           warn=self.log.alert, timeout=self.request.registry_timeout)

    @property
    def platform(self) -> Platform:
        """The platform built for (TARGETPLATFORM): --platform's (one per build), else the
        host's."""
        return self.request.platforms[0] if self.request.platforms \
            else parse_platform(str(PLATFORM))

    def find_image(self, ref: Reference, platform: Platform) -> StoredImage | None:
        """FROM's lookup for one platform: the local store, then the registry
        (builder/sources/pull.py)."""
        with self._pulling:
            if platform not in self._pullers:
                from builder.sources.pull import Puller
                self._pullers[platform] = Puller(self.images, self.registry, platform,
                                                 self.request.pull, self.log)
            return self._pullers[platform].image(ref)

    def import_caches(self) -> None:
        if not self.request.cache_from:
            return
        from builder.cache.transfer import import_cache
        from builder.cache.remote import RemoteLayers
        self.remote = RemoteLayers(self.blobs)
        for spec in self.request.cache_from:
            number = self.log.step(f"importing cache from {spec.describe()}")
            try:
                imported = import_cache(spec, self.registry)
            except LayerError as error:
                self.log.warn(f"cache from {spec.describe()} not used: {error}")
            else:
                self.cache.add_imported(imported.records, imported.manifests,
                                        self.remote.available)
                self.remote.add(imported.layers, imported.mounts)
                self.log.info(number, _summary(imported))
            self.log.done(number)

    # -- the Dockerfile and the context --------------------------------------------------------

    def parse(self, text: str, name: str) -> ins.Dockerfile:
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

    def memos(self, root: str, fresh: bool = False) -> dict[str, tuple]:
        """The content digests remembered for the files under `root` (the context's, or a
        directory build context's), read in one query per build; `fresh`: read again, with
        what this build's steps learned."""
        with self.making:
            if fresh or root not in self._file_memos:
                self._file_memos[root] = self.cache.file_memos(root.rstrip("/") + "/")
            return self._file_memos[root]

    @made_once
    def context(self) -> Tree:
        dockerfile = "-" if self.request.dockerfile_text is not None else self.request.dockerfile
        return ContextTree(self.request.context, load_ignore(self.request.context, dockerfile))

    def directory_tree(self, name: str, directory: DirectorySource) -> ContextTree:
        """A directory build context (COPY --from=NAME), with its own .dockerignore."""
        with self.making:
            tree = self._directory_trees.get(directory.path)
            if tree is None:
                if not os.path.isdir(directory.path):
                    raise BuildError(f"COPY --from={name}: the build context "
                                     f"{directory.text} is not a directory")
                tree = ContextTree(directory.path, load_ignore(directory.path, "-"),
                                   f"the build context {name}")
                self._directory_trees[directory.path] = tree
            return tree

    # -- snapshots and layers ------------------------------------------------------------------

    def layers(self, state: StageState) -> list[str]:
        """The snapshot directories of a state's layers, lowest first; the imported layers among
        them are brought here first."""
        if self.remote is not None:
            self.remote.ensure(state.image.diff_ids)
        return self.snapshots.ensure(state.image.diff_ids, self.blobs.path, self.unpacking)

    def view(self, state: StageState) -> UnionView:
        return self.snapshots.view(self.layers(state))

    def commit_layer(self, write, below: tuple[str, ...] | None = None) -> str:
        """Write a layer tar into the blob store (named by its diff ID) and return the diff ID.
        With `below` (the diff IDs of the layers under it), its snapshot is also unpacked from
        the bytes as they are written (layers/streamunpack.py) and kept under its chain ID: the
        step that reads its files next (a RUN) has nothing left to unpack."""
        with WrittenSnapshot(self.snapshots if below is not None else None) as snapshot:
            with self.blobs.temp() as (handle, temp_path):
                writer = LayerWriter(snapshot.tee(handle),
                                     clamp_mtime=self.request.source_date_epoch)
                write(writer)
                digest = writer.finish()
            self.blobs.commit(temp_path, digest.diff_id)
            if below is not None:
                snapshot.commit(chain_ids(below + (digest.diff_id,))[-1])
        return digest.diff_id

    def commit_upper(self, state: StageState, upper: str) -> str:
        """The layer of a RUN from its overlay upper dir; the upper dir becomes its snapshot."""
        from layers.overlaydiff import write_upper
        lower = self.view(state)
        diff_id = self.commit_layer(lambda writer: write_upper(upper, writer, lower))
        chain = chain_ids(state.image.diff_ids + (diff_id,))[-1]
        self.snapshots.adopt(chain, upper)
        return diff_id

    # -- RUN -----------------------------------------------------------------------------------

    @made_once
    def downloads(self) -> Downloads:
        """ADD's URL fetcher: what it fetched is kept under the cache root between builds."""
        from builder.cache.root import CacheRoot
        from builder.sources.download import DEFAULT_MAX_SIZE, Downloads
        return Downloads(CacheRoot(self.request.cache_dir).downloads,
                         timeout=self.request.registry_timeout,
                         max_size=self.request.add_max_size or DEFAULT_MAX_SIZE,
                         warn=self.log.alert)

    @made_once
    def git_sources(self) -> GitSources:
        """ADD's git checkouts, kept under the cache root between builds; an ssh URL goes
        through the --ssh agent `default`."""
        from builder.cache.root import CacheRoot
        from builder.sources.gitrepo import GitSources
        return GitSources(CacheRoot(self.request.cache_dir).git,
                          lambda: self.ssh_agents.socket("default"))

    @made_once
    def temp_dir(self) -> str:
        """This build's temp space (layers/scratch.py), made on first use: a no-op rebuild
        makes none."""
        return private_dir(self.request.cache_dir)

    def run_env(self, number: int, trees: Callable[[str], Tree]) -> RunEnv:
        """What a RUN needs; `trees(name)` is the tree a mount's from=NAME reads."""
        from builder.steps.run import RunEnv
        return RunEnv(sandbox=self.sandbox, scratch_dir=self.temp_dir,
                      lowerdirs=self.layers, view=self.snapshots.view,
                      roots=lambda: self.roots,
                      commit_upper=self.commit_upper, network=self.request.network,
                      insecure_allowed="security.insecure" in self.request.entitlements,
                      output=lambda chunk: self.log.output(number, chunk),
                      limits=self.request.limits, options=self.request.run_options,
                      warn=self.log.warn, confinement=self.confined,
                      mounts=lambda: self.mount_env(trees),
                      sandbox_failed=self.sandbox_failed)

    def mount_env(self, trees: Callable[[str], Tree]) -> MountEnv:
        from builder.steps.mounts import MountEnv
        return MountEnv(self.request.cache_dir,
                        lambda name: self.context if name is None else trees(name),
                        self.request.secrets, self.ssh_agents.socket)

    @made_once
    def ssh_agents(self) -> SshAgents:
        """The agents that hold --ssh key files, started on first use, stopped by `close`."""
        from builder.sources.sshagent import SshAgents
        return SshAgents(self.request.ssh)

    def restore_mounts(self, state: StageState, instruction: ins.Run) -> None:
        """Before a RUN runs: fill each of its cache mounts that is missing or empty here with
        the copy an imported cache holds (`--cache-from` of an export with mounts=true)."""
        imported = self.remote.mounts if self.remote is not None else {}
        if not (imported and instruction.mounts):
            return
        from builder.cache.mounts import fill_if_empty
        from builder.steps.mounts import cache_mounts
        for mount in cache_mounts(state, instruction):
            if mount.id in imported:
                fill_if_empty(self.request.cache_dir, mount,
                              partial(self._restore_mount, imported[mount.id]), self.temp_dir)

    def _restore_mount(self, mount: MountBlob, directory: str) -> None:
        """Fetch an imported cache mount and unpack it into its empty `directory`: a step of
        the log saying what came and from where. A mount that cannot be had is a warning; the
        RUN then starts with the cache empty."""
        from builder.cache.mountblobs import unpack
        layer = self.remote.known[mount.diff_id]
        number = self.log.step(f"importing cache mount {mount.id} from {layer.source}")
        started, entries = time.monotonic(), [0]

        def progress(count: int, done: int) -> None:
            entries[0] = count
            self.log.progress(number, done, None, count)
        fetched = not self.blobs.has(mount.diff_id)
        try:
            self.remote.ensure((mount.diff_id,))
            warnings = unpack(self.blobs.path(mount.diff_id), directory, self.temp_dir, progress)
        except (LayerError, OSError) as error:
            self.log.warn(f"cache mount {mount.id} not restored: {error}")
        else:
            for warning in warnings:
                self.log.warn(f"cache mount {mount.id}: {warning}")
            came = human_size(layer.blob.size) if fetched else "nothing"
            self.log.info(number, f"{entries[0]:,} entries, {human_size(mount.size)} of files "
                                  f"({came} fetched) in {time.monotonic() - started:.1f}s")
        self.log.done(number)

    def sandbox(self) -> Sandbox:
        """The isolation strategy, chosen once per build on first use (or remembered from an
        earlier build on this host, builder/sandbox/remembered.py); the log says which."""
        with self.making:
            if self._chosen_sandbox is None:
                from builder.sandbox import choice_from, choice_record, choose_sandbox
                what = f"sandbox {self.request.isolation}"
                choice = choice_from(self._recall(what))
                if choice is None:
                    choice = choose_sandbox(self.request.isolation, self.temp_dir)
                    self._remember(what, choice_record(choice))
                self._chosen_sandbox = choice.sandbox
                self.log.note(f"sandbox: {choice.sandbox.name} ({choice.reason})")
                if choice.warning:
                    self.log.warn(choice.warning)
            return self._chosen_sandbox

    def confined(self) -> Confinement:
        """Docker's capabilities and seccomp profile for RUN, compiled once per build (or
        remembered); the log warns once about what cannot be had here."""
        with self.making:
            if self._confinement is None:
                from builder.sandbox.confine import confinement_from, confinement_record, prepare
                what = f"confinement seccomp={self.request.seccomp}"
                found = confinement_from(self._recall(what))
                if found is None:
                    found = prepare(self.request.seccomp)
                    self._remember(what, confinement_record(*found))
                self._confinement, warnings = found
                for warning in warnings:
                    self.log.warn(warning)
            return self._confinement

    def sandbox_failed(self) -> None:
        """A RUN's sandbox could not be set up: the next build probes again."""
        from builder.sandbox import remembered
        remembered.forget(CacheRoot(self.request.cache_dir).sandbox_probes)

    @made_once
    def _probe_key(self) -> str:
        from builder.sandbox import remembered
        from builder.sandbox.seccomp import library_version
        return remembered.facts_key(self.temp_dir, library_version())

    def _recall(self, what: str) -> dict | None:
        from builder.sandbox import remembered
        return remembered.recall(CacheRoot(self.request.cache_dir).sandbox_probes,
                                 self._probe_key, what)

    def _remember(self, what: str, answer: dict) -> None:
        from builder.sandbox import remembered
        remembered.remember(CacheRoot(self.request.cache_dir).sandbox_probes, self._probe_key,
                            what, answer)

    @made_once
    def roots(self) -> RootPool:
        """The working roots of RUN where overlayfs is not used (layers/walkdiff.py)."""
        from layers.rootpool import RootPool, roots_dir
        return RootPool(roots_dir(self.request.cache_dir), self.temp_dir, self.snapshots)


def _summary(imported: ImportedCache) -> str:
    """What an imported cache holds, for the log: its mounts are layers too, counted apart."""
    mounts = imported.mounts
    layers = {layer.diff_id for layer in imported.layers} - {m.diff_id for m in mounts}
    text = f"{len(imported.records)} steps, {len(layers)} layers"
    if mounts:
        text += (f", {len(mounts)} cache mounts ({human_size(sum(m.size for m in mounts))}, "
                 "restored when a step that uses one runs)")
    return text
