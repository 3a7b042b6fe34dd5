"""The process side every strategy shares: fork a leader in its own process group, stream what it
writes, return the RUN's exit status, end the whole group when the RUN ends or is interrupted;
and, in the command's own process, become the RUN's user and exec.

Forking from a process with threads (stages built at the same time, a transfer's workers, the live
view's redraws) is safe here because a child never takes a lock another thread may have held at
fork(): it runs only code of modules imported before (no import, so no import lock), makes system
calls, writes with os.write (no stream, so no buffer's lock; the log's lock is held across fork,
builder/progress/sinks.py) and leaves by exec or os._exit (no atexit, no flush).
tests/test_parallel_stages.py forks sandboxes from many threads at once, over and over.
"""
from __future__ import annotations

import contextlib
import errno
import os
import resource
import selectors
import signal
import time
from typing import Callable, NoReturn

from builder.cancel import CURRENT
from builder.runoptions import ULIMITS
from builder.sandbox import cgroups, linux
from builder.sandbox.spec import RunSpec

SETUP_FAILED = 125  # the exit status of a child whose sandbox could not be set up (`fail`)


def supervise(start: Callable[[int], NoReturn], output: Callable[[bytes], None]) -> int:
    """Fork a leader that runs `start(write)` (stdout and stderr go to `write`) as the head of a
    new session, as a container's process is; stream its output to `output` until it exits,
    then kill what is left of its process group. An exception here (Ctrl-C, SIGTERM) kills the
    group before it propagates. The session's process group is orphaned, so SIGTSTP, SIGTTIN
    and SIGTTOU do not stop its processes (a stopped RUN would never end)."""
    read, write = os.pipe()
    leader = os.fork()
    if leader == 0:
        os.close(read)
        try:
            os.setsid()
        except BaseException as error:  # never let a forked child run pybuild's code
            fail(write, str(error))
        start(write)
    os.close(write)
    pidfd = os.pidfd_open(leader)
    cancellation = CURRENT.get()
    if cancellation is not None:
        cancellation.started(leader, pidfd)
    try:
        status = _stream(leader, pidfd, read, output)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):  # it may not lead its group yet
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        kill_group(leader)
        raise
    finally:
        if cancellation is not None:
            cancellation.ended(leader)
        os.close(pidfd)
        os.close(read)
    return exit_code(status)


def _stream(leader: int, pidfd: int, read: int, output: Callable[[bytes], None]) -> int:
    """Copy output until the leader exits; then end its group (processes the command left
    running) and take what they wrote before they died. Returns the leader's wait status."""
    with selectors.DefaultSelector() as selector:
        selector.register(read, selectors.EVENT_READ)
        selector.register(pidfd, selectors.EVENT_READ)
        exited = False
        while not exited:
            for key, _ in selector.select():
                if key.fd == pidfd:
                    exited = True
                elif chunk := os.read(read, 65536):
                    output(chunk)
                else:
                    selector.unregister(read)
    _, status = os.waitpid(leader, 0)
    kill_group(leader)
    os.set_blocking(read, False)
    try:
        while chunk := os.read(read, 65536):
            output(chunk)
    except BlockingIOError:  # a process that left the group (setsid) still holds the pipe
        pass
    return status


def kill_group(leader: int) -> None:
    """Kill the process group of `leader`, reap the leader and wait (up to 10 s) until the group
    is gone, so no process of the RUN outlives the RUN or the interruption that stopped it."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(leader, signal.SIGKILL)
        except ProcessLookupError:
            return
        try:  # the leader, and orphans of the group this process adopted as a subreaper
            while os.waitpid(-leader, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            pass
        time.sleep(0.01)


def attempt(*steps: tuple[str, Callable[[], object]]) -> str | None:
    """Run `steps` in order in a throwaway child (what they change dies with it): None when all
    succeed, else which one failed and why, as `unshare: Operation not permitted (EPERM)`."""
    read, write = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read)
        for what, step in steps:
            try:
                step()
            except BaseException as error:
                os.write(write, f"{what}: {describe(error)}".encode(errors="replace"))
                os._exit(1)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as reader:
        message = reader.read().decode(errors="replace")
    _, status = os.waitpid(child, 0)
    return None if os.waitstatus_to_exitcode(status) == 0 else message or "failed"


def describe(error: BaseException) -> str:
    """An error as `Operation not permitted (EPERM)`: the errno name is what a search finds."""
    number = getattr(error, "errno", None)
    if number in errno.errorcode:
        return f"{os.strerror(number)} ({errno.errorcode[number]})"
    return str(error)


def exit_code(status: int) -> int:
    """A wait status as a shell reports it: the exit code, or 128+N when killed by signal N."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def fail(write: int, message: str) -> NoReturn:
    """End a forked child of the sandbox with a message in the RUN's output."""
    os.write(write, f"pybuild sandbox: {message}\n".encode(errors="replace"))
    os._exit(SETUP_FAILED)


def _set_ulimits(spec: RunSpec, write: int) -> None:
    for limit in spec.ulimits:
        try:
            resource.setrlimit(ULIMITS[limit.name], (_rlim(limit.soft), _rlim(limit.hard)))
        except (OSError, ValueError) as error:
            fail(write, f"--ulimit {limit.text}: cannot set it: {describe(error)}")


def _rlim(value: int) -> int:
    return resource.RLIM_INFINITY if value == -1 else value


def exec_command(spec: RunSpec, write: int, joins: tuple[int, ...], setgroups: bool = True,
                 isolate: Callable[[], None] | None = None) -> NoReturn:
    """In the command's process, inside its root: signals at their defaults, stdin an empty
    pipe and output to `write` (as BuildKit gives them; no other descriptor survives the exec),
    into the RUN's cgroup, its --ulimit limits (set before `isolate`: raising a hard limit
    needs CAP_SYS_RESOURCE in the host's user namespace), `isolate()` (a user namespace of its
    own), Docker's capabilities and seccomp filter (`spec.confinement`), become the RUN's user,
    exec. `setgroups` is False in a
    user namespace that forbids it (a single-id map): the command keeps the groups it has."""
    try:
        linux.reset_signals()
        stdin, closed = os.pipe()
        os.close(closed)
        os.dup2(stdin, 0)
        os.dup2(write, 1)
        os.dup2(write, 2)
        linux.close_on_exec(3)
        cgroups.join(joins)
        _set_ulimits(spec, write)
        if isolate is not None:
            isolate()
        if spec.confinement is not None:
            try:
                spec.confinement.apply()
            except OSError as error:  # its EINVAL is no mapping's
                fail(2, f"cannot confine the command: {error}")
        if setgroups:
            os.setgroups(list(spec.groups))
        os.setgid(spec.gid)
        os.setuid(spec.uid)
        os.chdir(spec.cwd)
    except BaseException as error:
        if getattr(error, "errno", None) == errno.EINVAL:  # setgroups, setgid, setuid
            fail(2, f"cannot run as uid {spec.uid} gid {spec.gid}: not mapped in this user "
                    "namespace (only root is, without subordinate ids in /etc/subuid and "
                    "/etc/subgid)")
        fail(2, f"cannot prepare the command: {error}")
    env = dict(item.split("=", 1) if "=" in item else (item, "") for item in spec.env)
    try:
        os.execvpe(spec.argv[0], list(spec.argv), env)
    except OSError as error:
        os.write(2, f"pybuild: {spec.argv[0]}: {error.strerror}\n".encode(errors="replace"))
        os._exit(127 if isinstance(error, FileNotFoundError) else 126)
    except BaseException:
        os._exit(127)
