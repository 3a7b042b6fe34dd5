"""RUN --mount, planned: the mounts a RUN asks for (grammar/mounts.py), expanded in the stage's
scope and turned into what the sandbox mounts (builder/sandbox/mounts.py), with the caches held
and the secrets read for as long as the command runs.

A bind mount's from= (and a cache mount's, which seeds a new cache) names a stage, an image or a
directory build context, resolved as COPY --from's (builder/stage.py). A directory is bound as it
is; the part of a stage or an image a mount reads is first made one directory
(builder/sources/materialize.py). `source` stays inside its tree: `..` stops at the root, and
symlinks are followed inside it (out of a directory, they are refused).

What goes into the step's cache key (`key_inputs`): the mounts as written are in the instruction
already; a bind mount of the build context adds the digest of what it binds (as COPY does), one
of a stage or an image the digest of what it binds, contents and owners (BuildKit's rule: a
change elsewhere in that stage does not re-run the step). Cache mounts, tmpfs, secrets and ssh add
nothing: a changed cache, secret value or agent never makes a step run again (BuildKit's rule);
--no-cache does.
"""
from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Iterator

from builder.cache import mounts as cachemounts
from builder.errors import BuildError
from builder.sandbox.mounts import MountPoint
from builder.sources.materialize import materialize
from builder.sources.secrets import SecretSource
from builder.sources.tree import ContextTree, Found, OutsideTree, Tree, resolve
from builder.plan.state import StageState
from grammar import instructions as ins
from grammar.mounts import (BindMount, CacheMount, Mount, MountError, SecretMount, SshMount,
                            TmpfsMount, parse_mount)


@dataclass(frozen=True)
class MountEnv:
    """What planning mounts needs from the build. `tree(name)` is the tree a mount's `from`
    names (None: the build context); `agent(id)` the ssh-agent socket forwarded for an id, or
    None."""

    cache_dir: str
    tree: Callable[[str | None], Tree]
    secrets: dict[str, SecretSource] = field(default_factory=dict)
    agent: Callable[[str], str | None] = lambda ident: None


@dataclass(frozen=True)
class Planned:
    mounts: tuple[MountPoint, ...]
    env: tuple[tuple[str, str], ...]  # added to the command's environment (secret env=, ssh)


def parsed(state: StageState, instruction: ins.Run) -> list[Mount]:
    """The RUN's mounts, every value but `type` expanded with the stage's ARG/ENV scope."""
    mounts = []
    for text in instruction.mounts:
        try:
            mounts.append(parse_mount(text, state.expand))
        except MountError as error:
            raise BuildError(f"--mount={text}: {error}") from None
    return mounts


def key_inputs(state: StageState, instruction: ins.Run,
               digest: Callable[[str | None, str], str]) -> tuple[tuple[str, str], ...]:
    """What a RUN's bind mounts add to its cache key: `digest(from, source)` of each."""
    return tuple((f"mount {m.target}", digest(m.from_, m.source))
                 for m in parsed(state, instruction) if isinstance(m, BindMount))


def relative(source: str) -> str:
    """A source as a path inside its tree (`..` stops at the root), `.` for the root."""
    return posixpath.normpath("/" + source).lstrip("/") or "."


@contextlib.contextmanager
def planned(state: StageState, instruction: ins.Run, env: MountEnv,
            scratch: str) -> Iterator[Planned]:
    """The RUN's mounts, made ready (caches locked, secrets read) until the block ends;
    `scratch` is the RUN's own temp directory."""
    workdir = state.image.config.working_dir or "/"
    points: list[MountPoint] = []
    variables: list[tuple[str, str]] = []
    ssh_count = 0
    with contextlib.ExitStack() as stack:
        for mount in parsed(state, instruction):
            target = _target(workdir, mount)
            if isinstance(mount, CacheMount):
                seed = partial(_seed, mount, env) if mount.from_ is not None else None
                data = stack.enter_context(cachemounts.held(env.cache_dir, mount, scratch, seed))
                points.append(MountPoint(target, "bind", data, readonly=mount.readonly))
            elif isinstance(mount, BindMount):
                source = _bind_source(mount, env, scratch)
                points.append(MountPoint(target, "bind", source, readonly=mount.readonly))
            elif isinstance(mount, TmpfsMount):
                size = f"size={mount.size}" if mount.size is not None else ""
                points.append(MountPoint(target, "tmpfs", options=size))
            elif isinstance(mount, SecretMount):
                value = _secret(mount, env)
                if value is None:
                    continue
                if mount.env is not None:
                    variables.append((mount.env, value.decode(errors="surrogateescape")))
                if target is not None:
                    points.append(MountPoint(target, "file", content=value, mode=mount.mode,
                                             uid=mount.uid, gid=mount.gid))
            elif isinstance(mount, SshMount):
                socket = _agent(mount, env)
                if socket is None:
                    continue
                target = target or f"/run/buildkit/ssh_agent.{ssh_count}"
                ssh_count += 1
                points.append(MountPoint(target, "bind", socket))
                if mount.id == "default" or not any(k == "SSH_AUTH_SOCK" for k, _ in variables):
                    variables.append(("SSH_AUTH_SOCK", target))
        yield Planned(tuple(points), tuple(variables))


def _target(workdir: str, mount: Mount) -> str | None:
    """The absolute target (relative ones are under WORKDIR, as BuildKit takes them)."""
    target = getattr(mount, "target", None)
    if target is None:
        return None
    absolute = posixpath.normpath(posixpath.join(workdir, target))
    if absolute == "/":
        raise BuildError(f"--mount target {target}: cannot mount over the root")
    return absolute


def _bind_source(mount: BindMount, env: MountEnv, scratch: str) -> str:
    """The host path a bind mount binds: its source in the context or a directory build context
    (a private copy when `rw`), or that part of a stage or an image made a directory of the
    RUN's own."""
    tree = env.tree(mount.from_)
    found = found_in(tree, mount.source)
    if isinstance(tree, ContextTree):
        host = found.host if found is not None else tree.root
        return host if mount.readonly else _copied(host, scratch)
    target = os.path.join(tempfile.mkdtemp(dir=scratch, prefix="bind-"), "content")
    materialize(tree, found, target, link=mount.readonly)
    return target


def _seed(mount: CacheMount, env: MountEnv, data: str) -> None:
    """A new cache starts with its from= tree's `source` directory (BuildKit's rule)."""
    tree = env.tree(mount.from_)
    found = found_in(tree, mount.source)
    if found is not None and not stat.S_ISDIR(found.st.st_mode):
        raise BuildError(f"--mount=type=cache,from={mount.from_},source={mount.source}: not a "
                         f"directory in {tree.label}")
    os.rmdir(data)
    materialize(tree, found, data, link=False)


def found_in(tree: Tree, source: str) -> Found | None:
    """A mount's `source` in `tree`, symlinks followed inside it; None for the root of an empty
    tree."""
    rel = relative(source)
    try:
        found = resolve(tree, rel if rel != "." else "", confined=tree.confined)
    except OutsideTree as error:
        raise BuildError(f"--mount source {source}: a symlink leads out of "
                         f"{tree.label} ({error})") from None
    if rel != "." and found is None:
        raise BuildError(f"--mount source {source}: not found in {tree.label}")
    return found


def _copied(source: str, scratch: str) -> str:
    """A private copy of a `rw` bind mount's source: the command's writes go there, and are
    thrown away with the RUN's scratch directory."""
    copy = tempfile.mkdtemp(dir=scratch, prefix="bind-rw-")
    target = os.path.join(copy, "content")
    if os.path.isdir(source):
        shutil.copytree(source, target, symlinks=True)
    else:
        shutil.copy2(source, target)
    return target


def _secret(mount: SecretMount, env: MountEnv) -> bytes | None:
    source = env.secrets.get(mount.id)
    try:
        value = source.read() if source is not None else None
    except ValueError as error:
        raise BuildError(str(error)) from None
    if value is None and mount.required:
        given = "given but its source does not exist" if source else "not given"
        raise BuildError(f"secret {mount.id} is required but {given} (--secret "
                         f"id={mount.id},src=FILE or --secret id={mount.id},env=VARIABLE)")
    return value


def _agent(mount: SshMount, env: MountEnv) -> str | None:
    try:
        socket = env.agent(mount.id)
    except ValueError as error:
        raise BuildError(str(error)) from None
    if socket is None and mount.required:
        raise BuildError(f"ssh agent {mount.id} is required but not forwarded (--ssh "
                         f"{mount.id}=SOCKET, --ssh {mount.id}=KEYFILE, or --ssh default with "
                         "SSH_AUTH_SOCK set)")
    return socket


def cache_mounts(state: StageState, instruction: ins.Run) -> list[CacheMount]:
    """The RUN's cache mounts, for --cache-to mounts=true (whether the RUN runs or is reused)
    and the --cache-from that restores them."""
    return [m for m in parsed(state, instruction) if isinstance(m, CacheMount)]
