"""The `chroot` strategy, for where unshare(2) and mount(2) are forbidden: an unprivileged Docker
container with the default seccomp profile and capabilities, as CI runners start jobs. It needs
only what Docker grants by default: CAP_SYS_CHROOT, CAP_MKNOD, CAP_SETUID/CAP_SETGID.

The stage's working root is a plain directory (layers/walkdiff.py: `overlay` is False), the
command is chrooted into it, and a walk diff finds what it changed. Nothing can be mounted
`nodev`, so the image's device nodes are inert placeholders there (layers/walkdiff.py). There is no pid, mount, uts,
ipc or network namespace: the RUN shares the network, the hostname and the process table of the
machine (it sees no processes only because no /proc is mounted), and a root RUN could leave the
chroot. It isolates a build's files, not a hostile command. The command leads a process group
of its own; the group is killed when the command exits, so what it left running in the
background dies with it, as it would with a pid namespace (a process that leaves the group,
with setsid, is beyond reach).
"""
from __future__ import annotations

import os
import shutil
import signal
import stat
import tempfile
from typing import Callable, NoReturn

from builder.errors import BuildError
from builder.sandbox import cgroups, inplace, linux, process, rootfs
from builder.sandbox.spec import RunSpec


def probe(scratch: str) -> str | None:
    """Why the chroot strategy cannot work here, or None: chroot(2) itself, and, in `scratch`
    (the cache's filesystem), the device nodes of /dev. Deletions need nothing: where the
    cache's filesystem cannot hold overlayfs's whiteouts (a container's overlayfs root), the
    snapshots keep them as files (layers/snapshots.py)."""
    failure = process.attempt(("chroot", lambda: os.chroot("/")))
    if failure is not None:
        return f"{failure} (chroot needs CAP_SYS_CHROOT)"
    base = tempfile.mkdtemp(dir=scratch, prefix="chroot-probe-")
    try:
        try:
            os.mknod(os.path.join(base, "null"), stat.S_IFCHR | 0o666, os.stat("/dev/null").st_rdev)
        except OSError as error:
            return f"mknod /dev/null: {process.describe(error)} (making /dev needs CAP_MKNOD)"
        return None
    finally:
        shutil.rmtree(base, ignore_errors=True)


class ChrootSandbox:
    name = "chroot"
    overlay = False
    nodev = False

    def run(self, spec: RunSpec, output: Callable[[bytes], None]) -> int:
        if spec.network == "none":
            raise BuildError("RUN --network=none needs a network namespace, which the chroot "
                             "sandbox does not make: it shares the network of the machine")
        if spec.mounts:
            raise BuildError("RUN --mount needs a mount namespace, which the chroot sandbox "
                             "cannot make (unshare and mount are forbidden here); use the "
                             "namespaces or rootless isolation where the kernel allows it")
        if spec.shm_size is not None:
            raise BuildError("--shm-size sizes the tmpfs mounted at /dev/shm, which the chroot "
                             "sandbox cannot mount (mount is forbidden here); RUN has no "
                             "/dev/shm of its own there")
        linux.become_subreaper()
        etc_files = rootfs.etc_files(spec.scratch, spec.hostname, spec.hosts)
        with inplace.placed(spec.upperdir, spec.scratch, etc_files, devices=True):
            return process.supervise(lambda write: _command(spec, write), output)


def _command(spec: RunSpec, write: int) -> NoReturn:
    """The command's process: into the cgroup, into the root, as the RUN's user."""
    try:
        linux.die_with_parent(signal.SIGKILL)
        joins = cgroups.join_descriptors(spec.cgroup)
        os.chroot(spec.upperdir)
        os.chdir("/")
        if not os.path.isdir(spec.cwd):
            os.makedirs(spec.cwd, 0o755)
    except BaseException as error:  # never let a forked child run pybuild's code
        process.fail(write, f"cannot enter the root: {error}")
    process.exec_command(spec, write, joins)
