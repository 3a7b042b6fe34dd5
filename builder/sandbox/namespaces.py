"""The `namespaces` strategy: mount, pid, uts, ipc (and net for --network none) namespaces, an
overlay root, pivot_root, and a pid 1 that reaps orphans. Inside a user namespace (userns.py) the
same code is the `rootless` strategy.

Process tree: pybuild forks a keeper, which unshares and forks the sandbox's pid 1, which sets up
the root and forks the command. The keeper exists because a pid namespace applies to the children
of the process that creates it, and pybuild itself must stay where it is. Each generation dies
with its parent (PR_SET_PDEATHSIG), so killing the keeper tears the whole sandbox down, and the
mounts vanish with the last process of the mount namespace. Only the command joins the RUN's
cgroup (cgroups.py), just before it execs.

The sandbox's pid 1 mounts the root with the privileges pybuild has (as root, the overlay keeps
its marks in `trusted.*` xattrs, as the snapshots have them; a rootless build is in its user
namespace as a whole, see userns.py). The command then enters a user namespace of its own with
the same ids, each mapped to itself (userns.enter_nested): it is root there, over nothing the
kernel guards (mounts, device nodes, modules, the host's network), as in a rootless container.
/proc files a root of the host could still write (sysrq-trigger, sysctls) are read-only.
"""
from __future__ import annotations

import fcntl
import os
import signal
import socket
import struct
from typing import Callable, NoReturn

from builder.sandbox import cgroups, inplace, linux, mounts, process, rootfs, userns
from builder.sandbox.spec import RunSpec

_SIOCSIFFLAGS = 0x8914
_IFF_UP_LOOPBACK_RUNNING = 0x1 | 0x8 | 0x40
_FLAGS = linux.CLONE_NEWNS | linux.CLONE_NEWPID | linux.CLONE_NEWUTS | linux.CLONE_NEWIPC


def probe() -> tuple[bool, str]:
    """Whether namespaces and mounts work here (tried in a throwaway child), and if not, why."""
    if os.geteuid() != 0:
        return False, f"not running as root (uid {os.geteuid()})"
    failure = process.attempt(("unshare", lambda: linux.unshare(_FLAGS)),
                              ("mount", lambda: linux.mount(None, "/", None,
                                                            linux.MS_REC | linux.MS_PRIVATE)),
                              ("unshare(CLONE_NEWUSER)",
                               lambda: linux.unshare(linux.CLONE_NEWUSER)))
    if failure is None:
        return True, "mount, pid, uts, ipc, net and user namespaces are available"
    if failure.startswith("unshare") and "(EPERM)" in failure and not userns.inside():
        failure += (", as in a container with Docker's default seccomp profile (it allows "
                    "unshare only with CAP_SYS_ADMIN)")
    return False, failure


class NamespaceSandbox:
    nodev = True

    def __init__(self, overlay: bool = True, rootless: bool = False) -> None:
        self.overlay = overlay
        self.rootless = rootless
        self.name = "rootless" if rootless else "namespaces"

    def run(self, spec: RunSpec, output: Callable[[bytes], None]) -> int:
        etc_files = rootfs.etc_files(spec.scratch, spec.hostname, spec.hosts)

        def keeper(write: int) -> NoReturn:
            self._keeper(spec, etc_files, write)

        stubs = mounts.missing_file_targets(spec.mounts, spec.lowerdirs,
                                            None if self.overlay else spec.upperdir)
        try:
            if not self.overlay:
                with inplace.placed(spec.upperdir, spec.scratch, etc_files, devices=False):
                    return process.supervise(keeper, output)
            stub_layer = os.path.join(spec.scratch, "stubs")
            os.makedirs(stub_layer, exist_ok=True)
            rootfs.make_stub_layer(stub_layer, rootfs.missing_stubs(spec.lowerdirs),
                                   spec.lowerdirs)
            return process.supervise(keeper, output)
        finally:
            mounts.remove_stubs(spec.upperdir, stubs)

    def _keeper(self, spec: RunSpec, etc_files: dict[str, str], write: int) -> NoReturn:
        """Child of pybuild: make the namespaces, then wait for the sandbox's pid 1."""
        try:
            linux.die_with_parent(signal.SIGKILL)
            joins = cgroups.join_descriptors(spec.cgroup)
            setgroups = userns.setgroups_allowed()
            linux.unshare(_FLAGS | (linux.CLONE_NEWNET if spec.network == "none" else 0))
            init = os.fork()
            if init == 0:
                self._init(spec, etc_files, write, joins, setgroups)
            os.close(write)
            _, status = os.waitpid(init, 0)
            os._exit(process.exit_code(status))
        except BaseException as error:  # never let a forked child run pybuild's code
            process.fail(write, str(error))

    def _init(self, spec: RunSpec, etc_files: dict[str, str], write: int, joins: tuple[int, ...],
              setgroups: bool) -> NoReturn:
        """pid 1 of the sandbox: build the root, start the command, reap everything, exit with
        the command's status (which ends every process left in the namespace)."""
        try:
            linux.die_with_parent(signal.SIGKILL)
            linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
            root = os.path.join(spec.scratch, "root")
            os.makedirs(root, exist_ok=True)
            rootfs.mount_image(root, spec.lowerdirs, spec.upperdir, spec.workdir,
                               os.path.join(spec.scratch, "stubs"), self.overlay, self.rootless,
                               nodev=not spec.insecure)
            rootfs.populate(root, etc_files, spec.shm_size or rootfs.SHM_SIZE)
            mounts.mount_all(root, spec.mounts, spec.scratch)
            rootfs.enter(root)
            if not spec.insecure:
                rootfs.protect_proc()
            linux.sethostname(spec.hostname)
            if spec.network == "none":
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                    fcntl.ioctl(sock, _SIOCSIFFLAGS,
                                struct.pack("16sH14x", b"lo", _IFF_UP_LOOPBACK_RUNNING))
            if not os.path.isdir(spec.cwd):
                os.makedirs(spec.cwd, 0o755)
        except BaseException as error:
            process.fail(write, f"cannot set up the root: {error}")
        if spec.insecure:
            command = os.fork()
            if command == 0:
                process.exec_command(spec, write, joins, setgroups)
        else:
            command = self._isolated_command(spec, write, joins, setgroups)
        os.close(write)
        status = 0
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            if pid == command:
                break
        os._exit(process.exit_code(status))

    @staticmethod
    def _isolated_command(spec: RunSpec, write: int, joins: tuple[int, ...],
                          setgroups: bool) -> int:
        """Fork the command into a user namespace of its own, mapped by this process."""
        ready_read, ready_write = os.pipe()
        mapped_read, mapped_write = os.pipe()
        command = os.fork()
        if command == 0:
            os.close(ready_read)
            os.close(mapped_write)
            process.exec_command(spec, write, joins, setgroups,
                                 lambda: userns.enter_nested(ready_write, mapped_read))
        os.close(ready_write)
        os.close(mapped_read)
        failure = userns.map_nested(command, ready_read, mapped_write)
        if failure is not None:
            process.fail(write, failure)
        return command
