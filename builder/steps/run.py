"""RUN: the command in the sandbox over the image's snapshots; what it changed becomes the layer."""
from __future__ import annotations

import collections
import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from builder.errors import BuildError, NotSupported
from builder.limits import Limits, memory_text
from builder.runoptions import RunOptions
from builder.steps.config import DEFAULT_SHELL
from builder.steps.mounts import Planned, planned as mount_plan
from builder.sandbox import cgroups, inplace
from builder.sandbox.process import SETUP_FAILED
from builder.sandbox.spec import RunSpec, Sandbox
from builder.sources.tree import StageTree
from builder.plan.state import StageState
from builder.steps.users import UnknownUser, resolve_run_user
from grammar import instructions as ins
from grammar.errors import DockerfileError
from layers.union import UnionView
from layers.rootpool import RootPool

if TYPE_CHECKING:
    from builder.steps.mounts import MountEnv
    from builder.sandbox.confine import Confinement

_TAIL_LINES = 12


@dataclass(frozen=True)
class RunEnv:
    """What RUN needs from the build."""

    sandbox: Callable[[], Sandbox]
    lowerdirs: Callable[[StageState], list[str]]
    view: Callable[[list[str]], UnionView]
    roots: Callable[[], RootPool]
    scratch_dir: str
    commit_upper: Callable[[StageState, str], str]
    network: str
    insecure_allowed: bool
    output: Callable[[bytes], None]
    limits: Limits
    options: RunOptions
    warn: Callable[[str], None]
    confinement: Callable[[], Confinement | None]
    mounts: Callable[[], MountEnv]
    sandbox_failed: Callable[[], None]


def argv(state: StageState, instruction: ins.Run) -> tuple[str, ...]:
    """The process to start, as BuildKit forms it: exec form as given; shell form through SHELL;
    a RUN that is a single heredoc runs its body (a `#!` body as a script, else through the
    shell); other heredocs are handed to the shell with their bodies appended."""
    shell = state.image.config.shell or DEFAULT_SHELL
    command = instruction.command
    if not command.shell:
        return command.args
    text = command.args[0]
    heredocs = instruction.heredocs
    if heredocs:
        if len(heredocs) == 1 and text.strip().lstrip("0123456789").startswith("<<") \
                and len(text.split()) == 1:
            body = heredocs[0].text()
            if body.startswith("#!"):
                return _script_runner(heredocs[0].name, body)
            return shell + (body,)
        text = text + "".join(f"\n{h.content}{h.name}" for h in heredocs)
    return shell + (text,)


def _script_runner(name: str, body: str) -> tuple[str, ...]:
    """A `#!` heredoc is a script: BuildKit mounts it as a file under /dev/pipes and executes it.
    Here the shell writes it there (/dev is the sandbox's own tmpfs, so nothing reaches the
    layer) and execs it; the body travels as $0, never through quoting."""
    path = "/dev/pipes/" + name.replace("/", "_")
    return ("/bin/sh", "-c", f'mkdir -p /dev/pipes && printf "%s" "$0" > {path} && '
            f"chmod 755 {path} && exec {path}", body)


def run(state: StageState, instruction: ins.Run, env: RunEnv) -> tuple[StageState, str | None]:
    """Run the command; returns the state and the diff ID of its layer (None if it changed
    nothing). A non-zero exit fails the build with the command's last output lines, and says
    so when the OOM killer ended it under --memory."""
    insecure = instruction.security == "insecure"
    if insecure and not env.insecure_allowed:
        raise BuildError("RUN --security=insecure needs the security.insecure entitlement: "
                         "--allow security.insecure")
    network = instruction.network or env.network
    if network == "default":
        network = env.network
    if network not in ("host", "none"):
        raise NotSupported(f"RUN --network={network} is not supported (use host or none)")
    lowerdirs = env.lowerdirs(state)
    view = env.view(lowerdirs)
    try:
        user = resolve_run_user(state.image.config.user, StageTree(view))
    except UnknownUser as error:
        raise DockerfileError(str(error)) from None
    variables = state.variables()
    variables.setdefault("HOME", user.home)
    command = argv(state, instruction)
    if any("\0" in text for text in (*command, *variables.values())):
        raise BuildError("RUN: the command or its environment holds a NUL byte (\\0), which no "
                         "command line can carry")
    sandbox = env.sandbox()
    scratch = tempfile.mkdtemp(dir=env.scratch_dir, prefix="run-")
    root = None  # without overlayfs: the stage's working root, changed in place
    try:
        upper, work = os.path.join(scratch, "upper"), os.path.join(scratch, "work")
        os.mkdir(work)
        if sandbox.overlay:
            os.mkdir(upper)
        else:
            root = env.roots().take(state.image.diff_ids, lowerdirs, view.form, sandbox.nodev)
            upper = root.path
        tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)

        def output(chunk: bytes) -> None:
            tail.extend(chunk.decode(errors="replace").splitlines())
            env.output(chunk)

        with contextlib.ExitStack() as held:
            planned = held.enter_context(mount_plan(state, instruction, env.mounts(),
                                                         scratch)) \
                if instruction.mounts else Planned((), ())
            group = held.enter_context(cgroups.applied(env.limits, env.warn,
                                                             env.options.cgroup_parent))
            spec = RunSpec(lowerdirs=tuple(lowerdirs), upperdir=upper, workdir=work,
                           scratch=scratch, argv=command,
                           env=tuple(f"{k}={v}" for k, v in
                                     (variables | dict(planned.env)).items()),
                           cwd=state.image.config.working_dir or "/", uid=user.uid, gid=user.gid,
                           groups=user.groups, network=network, cgroup=group,
                           insecure=insecure,
                           confinement=None if insecure else env.confinement(),
                           mounts=planned.mounts, hosts=env.options.hosts,
                           ulimits=env.options.ulimits, shm_size=env.options.shm_size)
            status = sandbox.run(spec, output)
            killed = status != 0 and cgroups.out_of_memory(group, status)
            starved = status != 0 and cgroups.pids_exhausted(group)
        if status == SETUP_FAILED:
            env.sandbox_failed()
        if status != 0:
            shown = "\n".join(f"  > {line}" for line in tail)
            what = (f"killed: out of memory (--memory {memory_text(env.limits.memory_bytes)})"
                    if killed else f"exited with status {status}")
            if starved:
                what += (f" (it reached --pids-limit {env.limits.pids}: no more processes could "
                         "start)")
            raise BuildError(f"RUN {what}" + (f"; last output:\n{shown}" if shown else ""))
        if root is not None:
            changes = os.path.join(scratch, "changes")
            os.mkdir(changes)
            root.diff(changes, view, settled=inplace.MOVED)
            upper = changes
        diff_id = env.commit_upper(state, upper) if os.listdir(upper) else None
        if root is not None:
            root.diff_ids += (diff_id,) if diff_id else ()
            env.roots().give(root)
            root = None
        return state, diff_id
    finally:
        if root is not None:  # the RUN failed or was interrupted: its root is no image's
            env.roots().discard(root)
        shutil.rmtree(scratch, ignore_errors=True)

