"""One stage of a build, step by step: its base, then each instruction, dispatched on its type.

Config-only instructions edit the image config (builder/steps/config.py, `METADATA`) and fold
into the next layer step's cache inputs; layer steps (RUN, WORKDIR, COPY, ADD) are decided by the
cache (builder/cache/decide.py), reused on a hit and run on a miss (`_LAYER_STEPS`). A stage is
built once per build, whoever asks first (the target, a later FROM, a COPY --from); stages built at
the same time (builder/stagepool.py) each run in a thread of their own, and one that asks for a
stage another thread is building waits for it.
"""
from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass, field, replace
from functools import cached_property, partial
from typing import TYPE_CHECKING, Callable

from builder.cache.decide import Decision, Hit, Miss, Speculation, Step, decide, sources_digest
from builder.cache.index import StepRecord
from builder.cache.key import Inputs, step_key
from builder.cancel import CURRENT, Canceled
from builder.errors import BuildError, describe_os_error
from builder.plan.stages import Plan, Stage
from builder.plan.state import DEFAULT_PATH, BuildArgs, StageState
from builder.session import PLATFORM, BuildSession
from builder.sources.tree import StageTree, Tree
from builder.steps.config import METADATA
from builder.steps.files import (CopySelection, StepEnv, linked_inputs, select_copy, workdir,
                                 write_copy)
from grammar import instructions as ins
from grammar.errors import DockerfileError
from grammar.expand import expand_word
from grammar.suggest import suggest
from layers.cachemanifest import CacheRecord
from layers.errors import LayerError
from layers.image import ContainerConfig, History, ImageConfig, chain_ids
from layers.platform import Platform, build_args, parse_platform
from layers.union import UnionView

if TYPE_CHECKING:
    from builder.sources.baseimage import BaseImage, DirectorySource
    from grammar.mounts import CacheMount



@dataclass(frozen=True)
class CopyFrom:
    """What COPY --from=NAME (or a RUN mount's from=NAME) reads, resolved: an earlier stage, an
    image (of a build context, the local store or a registry), or a directory build context."""

    name: str
    stage: Stage | None = None
    image: BaseImage | None = None
    directory: DirectorySource | None = None



def _arg_inputs(instruction: ins.Instruction, after: StageState) -> tuple[tuple[str, str], ...]:
    """An ARG's inputs are the values it gives (a changed --build-arg reaches only the steps after
    the ARG that declares it)."""
    if not isinstance(instruction, ins.Arg):
        return ()
    scope = after.variables()
    return tuple((f"ARG {d.name}", scope.get(d.name, "(unset)")) for d in instruction.args)



class _WaitingCycle(Exception):
    """A stage would wait for a stage that waits for it, across threads: said where the name
    that closes the cycle is read."""


@dataclass(frozen=True)
class _Claim:
    """A stage being built: by which thread, and set once it is over (built or failed)."""

    owner: int
    over: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class _Job:
    """A layer step that runs: what its executor reads."""

    state: StageState
    instruction: ins.Instruction
    number: int  # its step in the log
    env: StepEnv
    selection: CopySelection | None  # COPY/ADD of context files: selected before deciding
    hash_on_the_way: frozenset[str]  # COPY/ADD: host paths to hash while the layer is written
    mounted: dict[str, CopyFrom]  # RUN: what its mounts' from= name
    read_later: bool = False  # COPY/ADD: a later step of this build reads the layer's files


class StageBuilder:
    """Builds the stages of one Dockerfile in one session; guards what they accumulate (stage
    results, consumed build args, the hit and miss counts, the records and the cache mounts
    of RUN steps, run or reused, for --cache-to)."""

    def __init__(self, session: BuildSession, dockerfile: ins.Dockerfile, plan: Plan) -> None:
        self.session = session
        self.log = session.log
        self.dockerfile = dockerfile
        self.plan = plan
        self.states: dict[int, StageState] = {}
        self._claims: dict[int, _Claim] = {}
        self._chains: dict[int, list[int]] = {}  # thread -> its stages under way, as asked for
        self._awaiting: dict[int, int] = {}  # thread -> the stage another thread builds for it
        self._lock = threading.Lock()  # the above, and the counts below
        self.consumed: set[str] = set()
        self.hits = 0
        self.misses = 0
        self.reused_created: list[str] = []
        self._exported: dict[int, dict[str, CacheRecord]] = {}  # stage -> its steps' records
        self.cache_mounts: set[CacheMount] = set()  # of every RUN, for --cache-to mounts=true
        self.bases: dict[str, BaseImage] = {}  # FROM's images by name, for provenance
        self.global_args = self._global_args()

    def step(self, stage: Stage, state: StageState, instruction: ins.Instruction,
             title: str, position: str) -> StageState:
        if (cancellation := CURRENT.get()) is not None:
            cancellation.check()
        handler = METADATA.get(type(instruction))
        if handler is not None:
            return self._config_step(state, instruction, handler)
        return self._layer_step(stage, state, instruction, title, position)

    def _config_step(self, state: StageState, instruction: ins.Instruction,
                     handler: Callable) -> StageState:
        """A config-only step: no layer, no log line; its text (and an ARG's values) enter the
        next layer step's cache inputs."""
        if isinstance(instruction, ins.Arg):
            self.consumed.update(d.name for d in instruction.args)
        args = BuildArgs(self.session.request.build_args, self.global_args)
        after = self.located(instruction, lambda: handler(state, instruction, args))
        folded = ((f"step {len(state.pending)}", instruction.original),
                  *_arg_inputs(instruction, after))
        after = after.with_history(History(instruction.original, self.session.created,
                                           empty_layer=True))
        return replace(after, pending=state.pending + folded)

    def _layer_step(self, stage: Stage, state: StageState, instruction: ins.Instruction,
                    title: str, position: str) -> StageState:
        """A step that may make a layer: reused when the cache has it, else run and recorded."""
        session = self.session
        source = self._copy_from(state, instruction, stage)
        mounted = self._mount_sources(state, instruction, stage)
        number = self.log.step(f"{title} {instruction.original}", stage.label)
        for named in (source, *mounted.values()):
            if named is not None and named.image is not None:
                self.log.info(number, f"from {named.image.origin}")
        env = self._step_env(source)
        step = self._cache_step(stage, state, instruction, position, source, env, mounted)
        linked = isinstance(instruction, ins.Copy) and instruction.link
        if linked:
            step = self.located(instruction, lambda: self._linked_step(step, state, instruction,
                                                                       env))
        decision = self.located(instruction, lambda: decide(session.cache, step))
        if isinstance(decision, Hit) and linked:
            return self._relink(number, decision, state, instruction, step.slot)
        if isinstance(decision, Hit):
            return self._reuse(number, decision.record, state, decision.key)
        if isinstance(decision, Miss):
            self._missed(number, decision)
            self._offer_early(stage, state.image.diff_ids)  # copied while the step runs
        unknown = decision.unknown if isinstance(decision, Speculation) else frozenset()
        job = _Job(state, instruction, number, env, step.sources, unknown, mounted,
                   isinstance(instruction, ins.Copy) and self._read_later(stage, instruction)
                   and not self._snapshot_at_hand(state, decision))
        execute = _LAYER_STEPS[type(instruction)]
        after, diff_id, digests = self.located(instruction, lambda: execute(self, job))
        if isinstance(decision, Speculation):
            # A cold context: its files were hashed while the layer was written (one read).
            decision = self.located(instruction, lambda: decision.settle(session.cache, digests))
            self._missed(number, decision)
        if diff_id is not None:
            self.log.layer(number, diff_id, os.path.getsize(session.blobs.path(diff_id)))
        self.log.done(number)
        key, inputs = decision.key, decision.inputs
        after = after.with_history(History(instruction.original, session.created,
                                           empty_layer=diff_id is None), diff_id)
        after = replace(after, key=key, pending=())
        recorded = _alone(after, diff_id).to_json() if linked else after.to_json()
        self._export(CacheRecord(key, step.parent, inputs.items, recorded))
        session.cache.record(key, step.parent, step.slot, inputs, diff_id, recorded)
        if linked:
            after = self._chained(after, state, key, step.slot, diff_id)
        if diff_id is not None:
            self._offer_early(stage, after.image.diff_ids)
        return after

    def _offer_early(self, stage: Stage, diff_ids: tuple[str, ...]) -> None:
        """The target stage's layers so far, to the `-o` tarball begun early: the image will
        begin with them, and it is new (a step missed or made a layer)."""
        early = self.session.early_output
        if diff_ids and stage.index == self._target_index and early is not None:
            early.offer(diff_ids)

    def _export(self, record: CacheRecord) -> None:
        """Keep a step's record for --cache-to, under the stage this thread builds."""
        stage = self._chains[threading.get_ident()][-1]
        self._exported.setdefault(stage, {})[record.key] = record

    def exported(self) -> tuple[CacheRecord, ...]:
        """Every step's record, stage by stage in the Dockerfile's order (the same whether the
        stages were built one at a time or together)."""
        records = {key: record for stage in sorted(self._exported)
                   for key, record in self._exported[stage].items()}
        return tuple(records.values())

    def _linked_step(self, step: Step, state: StageState, instruction: ins.Copy,
                     env: StepEnv) -> Step:
        """COPY --link as the cache sees it: its own inputs only (the files it reads, its
        words expanded, the owner it gives), no parent, so a changed base still hits."""
        epoch = self.session.request.source_date_epoch
        items = (("linked", linked_inputs(state, instruction, env)),
                 ("SOURCE_DATE_EPOCH", "" if epoch is None else str(epoch)))
        return replace(step, parent="", pending=(), items=step.items + items)

    def _relink(self, number: int, hit: Hit, state: StageState, instruction: ins.Instruction,
                slot: str) -> StageState:
        """A linked step's hit: its layer (made without the layers below) put on this state."""
        with self._lock:
            self.hits += 1
        self.log.cached(number)
        record = hit.record
        blobs = self.session.blobs
        if record.diff_id is not None and blobs.has(record.diff_id):
            self.log.layer(number, record.diff_id, os.path.getsize(blobs.path(record.diff_id)))
        self._export(CacheRecord(hit.key, "", record.inputs.items, record.state))
        recorded = StageState.from_json(record.state, state.escape, hit.key)
        created = recorded.image.history[-1].created
        self.reused_created.append(created)
        after = state.with_history(History(instruction.original, created,
                                           empty_layer=record.diff_id is None), record.diff_id)
        return self._chained(after, state, hit.key, slot, record.diff_id)

    def _chained(self, after: StageState, state: StageState, linked_key: str, slot: str,
                 diff_id: str | None) -> StageState:
        """The state after a linked step, keyed on the state before it and the linked layer's
        key: the steps after it chain on both, as after any step."""
        inputs = Inputs(state.pending + (("linked layer", linked_key),))
        key = step_key(state.key, inputs)
        after = replace(after, key=key, pending=())
        self._export(CacheRecord(key, state.key, inputs.items, after.to_json()))
        self.session.cache.record(key, state.key, f"{slot}|chained", inputs, diff_id,
                                  after.to_json())
        return after

    # -- what each layer step runs: (state after, its layer or None, digests read on the way) ---

    def _run(self, job: _Job) -> tuple[StageState, str | None, dict[str, str]]:
        from builder.steps.run import run
        self._require_runnable(job.instruction, job.state.image)
        self.session.restore_mounts(job.state, job.instruction)
        after, diff_id = run(job.state, job.instruction, self.session.run_env(
            job.number, lambda name: self._from_tree(job.mounted[name])))
        return after, diff_id, {}

    def _require_runnable(self, instruction: ins.Instruction, image: ImageConfig) -> None:
        """A RUN in a foreign platform's image needs a binfmt_misc handler; without one it fails
        here, naming the package, not with ENOEXEC inside the container."""
        from builder.binfmt import NoHandler, require_runnable
        try:
            require_runnable(Platform(image.os, image.architecture, image.variant))
        except NoHandler as error:
            raise BuildError.at(instruction, f"RUN: {error}", self._line(instruction)) from None

    def _workdir(self, job: _Job) -> tuple[StageState, str | None, dict[str, str]]:
        after, diff_id = workdir(job.state, job.instruction, job.env)
        return after, diff_id, {}

    def _copy(self, job: _Job) -> tuple[StageState, str | None, dict[str, str]]:
        """COPY or ADD. Another stage's or an image's files are selected only now, on a miss."""
        selection = job.selection
        if selection is None:
            selection = select_copy(job.state, job.instruction, job.env)
        env = job.env
        if job.instruction.link:  # made on nothing: the layers below are neither read nor followed
            env = replace(env, image_view=lambda _: UnionView([]))
        if job.read_later:  # its snapshot unpacked as it is written, not after
            env = replace(env, commit_layer=partial(self.session.commit_layer,
                                                    below=job.state.image.diff_ids))
        diff_id, digests = write_copy(job.state, selection, env, job.hash_on_the_way)
        return job.state, diff_id, digests

    def _snapshot_at_hand(self, state: StageState, decision: Decision) -> bool:
        """Whether a step that runs only because the cache may not be used (--no-cache) made, in
        an earlier build, a layer whose snapshot is here: its files are then most likely the
        same again, and unpacking them while the layer is written would be thrown away (a
        layer that turns out different is unpacked when a step reads it, as a base's is)."""
        if not isinstance(decision, Miss):
            return False
        earlier = self.session.cache.earlier(decision.key)
        if earlier is None or earlier.diff_id is None:
            return False
        chain = chain_ids(state.image.diff_ids + (earlier.diff_id,))[-1]
        return os.path.isdir(self.session.snapshots.path(chain))

    def _read_later(self, stage: Stage, instruction: ins.Instruction) -> bool:
        """Whether the files of the layer `instruction` makes are read later in this build: by
        a later step of its stage that reads the image (RUN, WORKDIR, COPY or ADD without
        --link), or by another stage (only the target is built for no other stage's sake).
        An ONBUILD trigger comes before all of its stage's instructions."""
        if stage.index != self._target_index:
            return True
        later = stage.instructions
        for position, listed in enumerate(stage.instructions):
            if listed is instruction:
                later = stage.instructions[position + 1:]
        return any(isinstance(step, (ins.Run, ins.Workdir))
                   or (isinstance(step, ins.Copy) and not step.link) for step in later)

    @cached_property
    def _target_index(self) -> int:
        return self.plan.target(self.session.request.target).index

    def _missed(self, number: int, miss: Miss) -> None:
        with self._lock:
            self.misses += 1
        self.log.missed(number, miss.reason)

    def located(self, instruction: ins.Instruction, action):
        """Run a step; an error without a place (a LayerError, an OSError) gets the instruction's
        line."""
        try:
            return action()
        except DockerfileError as error:
            raise error.located(instruction.span, self._line(instruction))
        except LayerError as error:
            raise BuildError.at(instruction, f"{instruction.keyword}: {error}",
                                self._line(instruction)) from None
        except OSError as error:
            if error.errno is None:  # pybuild's own words already (a sandbox that cannot work)
                raise
            message, hint = describe_os_error(error)
            raise BuildError.at(instruction, f"{instruction.keyword}: {message}",
                                self._line(instruction), hint=hint) from None

    def stage(self, stage: Stage) -> StageState:
        """The final state of a stage, built once per build whoever asks first; a thread that
        asks while another builds it waits (Canceled if that one fails)."""
        me = threading.get_ident()
        with self._lock:
            if stage.index in self.states:
                return self.states[stage.index]
            claim = self._claims.get(stage.index)
            if claim is not None:
                self._refuse_waiting_cycle(stage, me)
                self._awaiting[me] = stage.index
            else:
                claim = self._claims[stage.index] = _Claim(me)
                chain = self._chains.setdefault(me, [])
        if claim.owner != me:
            return self._awaited(stage, claim, me)
        chain.append(stage.index)
        try:
            state = self._base(stage)
            total = len(stage.instructions)
            for position, instruction in enumerate(stage.instructions, start=1):
                state = self.step(stage, state, instruction,
                                  f"[{stage.label} {position}/{total}]", str(position))
            with self._lock:
                self.states[stage.index] = state
            return state
        finally:
            chain.pop()
            claim.over.set()

    def _awaited(self, stage: Stage, claim: _Claim, me: int) -> StageState:
        try:
            claim.over.wait()
        finally:
            with self._lock:
                del self._awaiting[me]
        if stage.index not in self.states:
            raise Canceled  # its own thread raises what stopped it
        return self.states[stage.index]

    def _refuse_waiting_cycle(self, stage: Stage, me: int) -> None:
        """Waiting for `stage` would never end when its builder waits, through others perhaps,
        for a stage this thread builds: a cycle that crosses threads (through a name known only
        when its stage runs), refused as `_refuse_cycle` refuses one within a thread."""
        labels, waiting = [stage.label], stage.index
        while (owner := self._claims[waiting].owner) != me:
            if owner not in self._awaiting:
                return
            waiting = self._awaiting[owner]
            labels.append(self.plan.stages[waiting].label)
        raise _WaitingCycle(f"circular dependency detected on stage {stage.label} (waiting "
                            f"for {' -> '.join(labels)})")

    def _base(self, stage: Stage) -> StageState:
        escape = self.dockerfile.directives.escape
        known = {k: v for k, v in self.global_args.items() if v is not None}
        source = stage.from_
        image_name = self.located(source, lambda: expand_word(source.image, known, escape))
        if not image_name:
            raise BuildError.at(source, f"base name ({source.image}) should not be blank",
                                self._line(source))
        platform = self.session.platform
        if source.platform:
            wanted = self.located(source, lambda: expand_word(source.platform, known, escape))
            try:
                platform = parse_platform(wanted)
            except ValueError as error:
                raise BuildError.at(source, f"FROM --platform: {error}",
                                    self._line(source)) from None
        number = self.log.step(f"[{stage.label}] FROM {image_name}", stage.label)
        state, origin = self._base_state(stage, image_name, platform, number)
        epoch = self.session.request.source_date_epoch
        state = replace(state, key="", pending=(
            origin, ("SOURCE_DATE_EPOCH", "" if epoch is None else str(epoch))))
        self.log.done(number)
        return self._onbuild(stage, state, image_name)

    def _base_state(self, stage: Stage, image_name: str, platform: Platform,
                    number: int) -> tuple[StageState, tuple[str, str]]:
        """The state FROM starts with, and the cache input that stands for it: scratch, an
        earlier stage, or an image (a build context's, the local store's or a registry's)."""
        escape = self.dockerfile.directives.escape
        if image_name == "scratch":
            image = ImageConfig(config=ContainerConfig(env=(f"PATH={DEFAULT_PATH}",),
                                                       working_dir="/"),
                                architecture=platform.architecture, os=platform.os,
                                variant=platform.variant)
            state = StageState(image, scope=image.config.env_dict(), escape=escape)
            tag = "/".join(filter(None, (platform.architecture, platform.variant)))
            return state, ("base image scratch", f"scratch {tag}")
        contexts = self.session.request.build_contexts
        parent = self.plan.base(image_name, stage.index)
        if parent is None or image_name in contexts:
            from builder.sources.baseimage import resolve_base
            base = self.located(stage.from_, lambda: resolve_base(
                image_name, self.session.images, contexts,
                partial(self.session.find_image, platform=platform),
                snapshots=self.session.snapshots, unpacking=self.session.unpacking))
            self.log.info(number, f"from {base.origin}")
            self.bases[image_name] = base
            image = replace(base.config, created="")
            if "PATH" not in image.config.env_dict():  # as BuildKit: `docker import` images
                image = replace(image, config=image.config.with_env("PATH", DEFAULT_PATH))
            state = StageState(image, scope=image.config.env_dict(), escape=escape)
            return state, (f"base image {image_name}", base.image_id)
        inherited = self.stage(parent)
        state = StageState(replace(inherited.image, created=""), scope=inherited.scope,
                           escape=escape)
        return state, (f"base stage {parent.label}", inherited.chain_key())

    def _onbuild(self, stage: Stage, state: StageState, image_name: str) -> StageState:
        """The base's ONBUILD triggers, run as the stage's first steps."""
        triggers = state.image.config.on_build
        if not triggers:
            return state
        state = state.with_config(on_build=())
        for number, trigger in enumerate(triggers):
            trigger_file = f"ONBUILD trigger of {image_name}"
            for instruction in self.session.parse(trigger, trigger_file).instructions:
                state = self.step(stage, state, instruction, f"[{stage.label}] ONBUILD",
                                  f"onbuild-{number}")
        return state

    def _copy_from(self, state: StageState, instruction: ins.Instruction,
                   stage: Stage) -> CopyFrom | None:
        """What a COPY --from names (as written, expanded), resolved before the COPY's own log
        line so the log reads in order (an earlier stage is built, an image perhaps pulled);
        None for any other step."""
        if not isinstance(instruction, ins.Copy) or isinstance(instruction, ins.Add) \
                or not instruction.from_:
            return None
        name = self.located(instruction, lambda: state.expand(instruction.from_))
        return self._named_source(name, instruction, stage, "COPY --from")

    def _mount_sources(self, state: StageState, instruction: ins.Instruction,
                       stage: Stage) -> dict[str, CopyFrom]:
        """What the from= of a RUN's bind and cache mounts name, resolved as COPY --from's
        (a stage used only by a mount is built here, before the RUN)."""
        if not isinstance(instruction, ins.Run) or not instruction.mounts:
            return {}
        from builder.steps.mounts import parsed
        sources: dict[str, CopyFrom] = {}
        for mount in self.located(instruction, lambda: parsed(state, instruction)):
            name = getattr(mount, "from_", None)
            if name and name not in sources:
                sources[name] = self._named_source(name, instruction, stage, "RUN --mount from")
        return sources

    def _named_source(self, name: str, instruction: ins.Instruction, stage: Stage,
                      asked_by: str) -> CopyFrom:
        """What a --from or from= name means. As in BuildKit, a --build-context of that name
        wins over a stage of that name; then an earlier stage (AS name or index); then an
        image, found as FROM finds one."""
        contexts = self.session.request.build_contexts
        if contexts:
            from builder.sources.baseimage import DirectorySource, named_context
            named = named_context(name, contexts)
            if named is not None and isinstance(named[1], DirectorySource):
                return CopyFrom(name, directory=named[1])
        else:
            named = None
        if named is None:
            source = self.plan.source(name)
            if source is not None:
                self._refuse_cycle(source, name, instruction, asked_by)
                try:
                    self.stage(source)
                except _WaitingCycle as cycle:
                    raise BuildError.at(instruction, f"{asked_by}={name}: {cycle}",
                                        self._line(instruction)) from None
                return CopyFrom(name, stage=source)
            if name.isdigit():
                raise BuildError.at(instruction, f"{asked_by}={name}: invalid stage index: the "
                                    f"file has {len(self.plan.stages)} stage"
                                    f"{'s' if len(self.plan.stages) != 1 else ''}",
                                    self._line(instruction))
        from builder.sources.baseimage import resolve_base
        try:
            image = self.located(instruction, lambda: resolve_base(
                name, self.session.images, contexts,
                partial(self.session.find_image, platform=self.session.platform), by=asked_by,
                snapshots=self.session.snapshots, unpacking=self.session.unpacking))
        except BuildError as error:
            names = [s.name for s in self.plan.stages if s.name]
            meant = suggest(name, names, case_sensitive=False) if named is None else None
            if meant is None:
                raise
            raise BuildError.at(instruction, error.message, self._line(instruction),
                                hint=f"did you mean the stage {meant}?") from None
        return CopyFrom(name, image=image)

    def _refuse_cycle(self, source: Stage, name: str, instruction: ins.Instruction,
                      asked_by: str) -> None:
        """A stage that needs one still being built (itself, or one that needs it) is a cycle,
        which BuildKit refuses as `circular dependency detected on stage`."""
        building = self._chains.get(threading.get_ident(), [])
        if source.index in building:
            chain = " -> ".join(self.plan.stages[i].label for i in building)
            raise BuildError.at(instruction, f"{asked_by}={name}: circular dependency detected "
                                f"on stage {source.label} (building {chain})",
                                self._line(instruction))

    def _from_input(self, source: CopyFrom) -> tuple[str, str]:
        """The cache input that stands for the files of a stage or an image COPY --from reads:
        the stage's key, or the image's ID (its config's digest, which names its layers)."""
        if source.stage is not None:
            return f"from stage {source.name}", self.stage(source.stage).chain_key()
        return f"from image {source.name}", source.image.image_id

    def _reuse(self, number: int, hit: StepRecord, state: StageState, key: str) -> StageState:
        """The state a cache hit recorded; its time is kept for `_stamped`."""
        with self._lock:
            self.hits += 1
        self.log.cached(number)
        blobs = self.session.blobs
        if hit.diff_id is not None and blobs.has(hit.diff_id):
            self.log.layer(number, hit.diff_id, os.path.getsize(blobs.path(hit.diff_id)))
        restored = StageState.from_json(hit.state, state.escape, key)
        self._export(CacheRecord(key, hit.parent, hit.inputs.items, hit.state))
        if restored.image.history:
            self.reused_created.append(restored.image.history[-1].created)
        return restored

    def _cache_step(self, stage: Stage, state: StageState, instruction: ins.Instruction,
                    position: str, source: CopyFrom | None, env: StepEnv,
                    mounted: dict[str, CopyFrom]) -> Step:
        """The step as the cache sees it. A stage's key or an image's ID stands for the files
        COPY --from reads, which are selected only on a miss: reading them may mean fetching or
        unpacking layers. Context files (or a directory build context's) are selected first."""
        step = Step(state.key, state.pending, (("instruction", instruction.original),),
                    f"{self.session.slot_prefix}|{stage.label}|{position}", stage.label)
        if source is not None and source.directory is None:
            return replace(step, items=step.items + (self._from_input(source),))
        if isinstance(instruction, ins.Copy):
            root = source.directory.path if source is not None else self.session.request.context
            selection = self.located(instruction, lambda: select_copy(state, instruction, env))
            return replace(step, sources=selection, memos=lambda: self.session.memos(root))
        if isinstance(instruction, ins.Run):
            network = instruction.network or self.session.request.network
            items = step.items + (("network", network),) + \
                self.session.request.run_options.key_items()
            if instruction.mounts:
                from builder.steps.mounts import cache_mounts, key_inputs
                items += self.located(instruction, lambda: key_inputs(
                    state, instruction, partial(self._bound_digest, state, instruction,
                                                mounted)))
                self.cache_mounts.update(cache_mounts(state, instruction))
            return replace(step, items=items)
        return step

    def _bound_digest(self, state: StageState, instruction: ins.Run,
                      mounted: dict[str, CopyFrom], name: str | None, source: str) -> str:
        """What a RUN's bind mount reads, digested: the context's (or a directory build
        context's) files as COPY digests them; a stage's or an image's part with owners, as
        BuildKit keys it, remembered by the stage's key (or the image's ID) and the path, so a
        rebuild neither unpacks nor reads it."""
        from builder.steps.mounts import found_in, relative
        named = mounted[name] if name is not None else None
        if named is not None and named.directory is None:
            from builder.cache.sources import bound_digest
            cache = self.session.cache
            signed = hashlib.sha256(f"bind\0{self._from_input(named)[1]}\0{source}".encode())
            known = cache.scanned(signed.hexdigest())
            if known is not None:
                return known
            tree = self._from_tree(named)
            digest = bound_digest(tree, found_in(tree, source))
            cache.remember_scan(signed.hexdigest(), digest)
            return digest
        copy = ins.Copy(instruction.span, instruction.original, (relative(source),), "/",
                        from_=name)
        selection = select_copy(state, copy, self._step_env(named))
        root = named.directory.path if named is not None else self.session.request.context
        return sources_digest(self.session.cache, selection, lambda: self.session.memos(root))

    def _from_tree(self, source: CopyFrom | None) -> Tree | None:
        """The files COPY --from reads: a stage's or an image's snapshots (unpacked here, on a
        miss), or a directory build context with its own .dockerignore."""
        if source is None:
            return None
        if source.stage is not None:
            return StageTree(self.session.view(self.stage(source.stage)))
        if source.image is not None:
            layers = self.session.snapshots.ensure(source.image.diff_ids, self.session.blobs.path,
                                                   self.session.unpacking)
            return StageTree(self.session.snapshots.view(layers), f"the image {source.name}")
        return self.session.directory_tree(source.name, source.directory)

    def _global_args(self) -> dict[str, str | None]:
        values: dict[str, str | None] = dict(build_args(self.session.platform, PLATFORM))
        given = self.session.request.build_args
        for instruction in self.plan.meta_args:
            for decl in instruction.args:
                self.consumed.add(decl.name)
                if given.get(decl.name) is not None:
                    values[decl.name] = given[decl.name]
                elif decl.default is not None:
                    known = {k: v for k, v in values.items() if v is not None}
                    values[decl.name] = self.located(instruction, lambda: expand_word(
                        decl.default, known, self.dockerfile.directives.escape))
                else:
                    values.setdefault(decl.name, None)
        return values


    def _line(self, instruction: ins.Instruction) -> str:
        return self.dockerfile.source_line(instruction.span.line)

    def _step_env(self, source: CopyFrom | None) -> StepEnv:
        session = self.session
        return StepEnv(context=session.context, image_view=session.view,
                       from_tree=lambda: self._from_tree(source),
                       commit_layer=session.commit_layer, now=session.now,
                       temp_dir=lambda: session.temp_dir, downloads=lambda: session.downloads,
                       git=lambda: session.git_sources)


def _alone(after: StageState, diff_id: str | None) -> StageState:
    """What a linked step's cache record keeps: its own layer and history entry, nothing of the
    base it was first made on (whose layers may be gone when a later build reuses it)."""
    image = after.image
    return replace(after, image=replace(image, diff_ids=(diff_id,) if diff_id else (),
                                        history=image.history[-1:]))


_LAYER_STEPS = {ins.Run: StageBuilder._run, ins.Workdir: StageBuilder._workdir,
                ins.Copy: StageBuilder._copy, ins.Add: StageBuilder._copy}
