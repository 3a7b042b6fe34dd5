"""The `namespaces` strategy: mount, pid, uts, ipc (and net for --network none) namespaces, an
overlay root, pivot_root, and a pid 1 that reaps orphans.

Process tree: pybuild forks a keeper, which unshares and forks the sandbox's pid 1, which sets up
the root and forks the command. The keeper exists because a pid namespace applies to the children
of the process that creates it, and pybuild itself must stay where it is. Each generation dies
with its parent (PR_SET_PDEATHSIG), so killing the keeper tears the whole sandbox down, and the
mounts vanish with the last process of the mount namespace. Only the command joins the RUN's
cgroup (cgroups.py), just before it execs.

Forking a Python process is safe here because the child only makes system calls before exec; the
caller must not run other threads at that moment (pybuild runs steps one at a time).

As root, no user namespace is made: an identity map of every id would change nothing, while an
overlay mounted inside a user namespace must use `user.*` xattrs, which the root snapshots (with
`trusted.overlay.opaque`) do not have. The rootless strategy is the one that needs a user namespace.
"""
from __future__ import annotations

import fcntl
import os
import signal
import socket
import struct
import time
from typing import Callable

from builder.sandbox import RunSpec, cgroups, linux, rootfs

_STATUS_SETUP_FAILED = 125
_SIOCSIFFLAGS = 0x8914
_IFF_UP_LOOPBACK_RUNNING = 0x1 | 0x8 | 0x40


def probe() -> tuple[bool, str]:
    """Whether namespaces and mounts work here (tried in a throwaway child), and why."""
    if os.geteuid() != 0:
        return False, "not running as root (the rootless strategy is not implemented yet)"
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            linux.unshare(linux.CLONE_NEWNS | linux.CLONE_NEWPID | linux.CLONE_NEWUTS | linux.CLONE_NEWIPC)
            linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
            os._exit(0)
        except OSError as error:
            os.write(write, str(error).encode())
            os._exit(1)
    os.close(write)
    with os.fdopen(read, "rb") as reader:
        message = reader.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) == 0:
        return True, "running as root; mount, pid, uts, ipc and net namespaces are available"
    return False, f"unshare or mount refused ({message or 'unknown error'})"


class NamespaceSandbox:
    name = "namespaces"

    def __init__(self, overlay: bool = True) -> None:
        self.overlay = overlay

    def run(self, spec: RunSpec, output: Callable[[bytes], None]) -> int:
        stubs = rootfs.missing_stubs(spec.lowerdirs if self.overlay else (spec.upperdir,))
        times = rootfs.parent_times(spec.upperdir, stubs) if not self.overlay else {}
        stub_layer = os.path.join(spec.scratch, "stubs")
        os.makedirs(stub_layer, exist_ok=True)
        rootfs.make_stub_layer(stub_layer if self.overlay else spec.upperdir, stubs,
                               spec.lowerdirs if self.overlay else (spec.upperdir,))
        etc_files = _etc_files(spec)
        read, write = os.pipe()
        keeper = os.fork()
        if keeper == 0:
            os.close(read)
            _keeper(spec, self.overlay, etc_files, write)
        os.close(write)
        try:
            with os.fdopen(read, "rb", buffering=0) as reader:
                while chunk := reader.read(65536):
                    output(chunk)
            _, status = os.waitpid(keeper, 0)
        except BaseException:
            _kill_group(keeper)
            raise
        finally:
            if not self.overlay:
                rootfs.remove_stubs(spec.upperdir, stubs, times)
        return _exit_code(status)


def _etc_files(spec: RunSpec) -> dict[str, str]:
    """The host's resolv.conf and a generated hosts and hostname, written to the scratch dir."""
    hosts = os.path.join(spec.scratch, "hosts")
    with open(hosts, "w") as handle:
        handle.write(f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                     f"127.0.1.1\t{spec.hostname}\n")
    hostname = os.path.join(spec.scratch, "hostname")
    with open(hostname, "w") as handle:
        handle.write(spec.hostname + "\n")
    files = {"etc/hosts": hosts, "etc/hostname": hostname}
    if os.path.exists("/etc/resolv.conf"):
        files["etc/resolv.conf"] = os.path.realpath("/etc/resolv.conf")
    return files


def _kill_group(leader: int) -> None:
    """Kill the sandbox's process group, reap its leader (the keeper) and wait (up to 10 s) until
    the group is gone, so no process of the RUN outlives the interruption that stopped it."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(leader, signal.SIGKILL)
        except ProcessLookupError:
            return
        try:
            os.waitpid(leader, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.01)


def _exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _fail(write: int, message: str) -> None:
    os.write(write, f"pybuild sandbox: {message}\n".encode(errors="replace"))
    os._exit(_STATUS_SETUP_FAILED)


def _keeper(spec: RunSpec, overlay: bool, etc_files: dict[str, str], write: int) -> None:
    """Child of pybuild: make the namespaces, then wait for the sandbox's pid 1."""
    try:
        os.setpgid(0, 0)
        linux.die_with_parent(signal.SIGKILL)
        flags = linux.CLONE_NEWNS | linux.CLONE_NEWPID | linux.CLONE_NEWUTS | linux.CLONE_NEWIPC
        if spec.network == "none":
            flags |= linux.CLONE_NEWNET
        joins = cgroups.join_descriptors(spec.cgroup)
        linux.unshare(flags)
        init = os.fork()
        if init == 0:
            _init(spec, overlay, etc_files, write, joins)
        os.close(write)
        _, status = os.waitpid(init, 0)
        os._exit(_exit_code(status))
    except BaseException as error:  # never let a forked child run pybuild's code
        _fail(write, str(error))


def _init(spec: RunSpec, overlay: bool, etc_files: dict[str, str], write: int,
          joins: tuple[int, ...]) -> None:
    """pid 1 of the sandbox: build the root, start the command, reap everything, exit with the
    command's status (which ends every process left in the namespace)."""
    try:
        linux.die_with_parent(signal.SIGKILL)
        linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
        root = os.path.join(spec.scratch, "root")
        os.makedirs(root, exist_ok=True)
        rootfs.mount_image(root, spec.lowerdirs, spec.upperdir, spec.workdir,
                           os.path.join(spec.scratch, "stubs"), overlay)
        rootfs.populate(root, etc_files)
        rootfs.enter(root)
        linux.sethostname(spec.hostname)
        if spec.network == "none":
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", _IFF_UP_LOOPBACK_RUNNING))
        if not os.path.isdir(spec.cwd):
            os.makedirs(spec.cwd, 0o755)
    except BaseException as error:
        _fail(write, f"cannot set up the root: {error}")
    command = os.fork()
    if command == 0:
        _exec(spec, write, joins)
    os.close(write)
    status = 0
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if pid == command:
            break
    os._exit(_exit_code(status))


def _exec(spec: RunSpec, write: int, joins: tuple[int, ...]) -> None:
    try:
        null = os.open("/dev/null", os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(write, 1)
        os.dup2(write, 2)
        cgroups.join(joins)
        os.setgroups(list(spec.groups))
        os.setgid(spec.gid)
        os.setuid(spec.uid)
        os.chdir(spec.cwd)
    except BaseException as error:
        _fail(2, f"cannot prepare the command: {error}")
    env = dict(item.split("=", 1) if "=" in item else (item, "") for item in spec.env)
    try:
        os.execvpe(spec.argv[0], list(spec.argv), env)
    except OSError as error:
        os.write(2, f"pybuild: {spec.argv[0]}: {error.strerror}\n".encode(errors="replace"))
        os._exit(127 if isinstance(error, FileNotFoundError) else 126)
    except BaseException:
        os._exit(127)
