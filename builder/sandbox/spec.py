"""What every sandbox strategy takes and offers: `RunSpec`, one command over an image, and the
`Sandbox` protocol. Its own module so the strategies need not import the package that picks them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol

from builder.sandbox.cgroups import Group

if TYPE_CHECKING:
    from builder.sandbox.confine import Confinement
    from builder.runoptions import Ulimit
    from builder.sandbox.mounts import MountPoint


@dataclass(frozen=True)
class RunSpec:
    """One command over an image.

    `lowerdirs` are snapshot directories in overlayfs format, lowest first (none for FROM
    scratch); every change lands in `upperdir` (empty beforehand), overlayfs's `workdir` lies on
    the same filesystem, and `scratch` is a private directory for the sandbox's own files.
    `argv` is already shell-wrapped; `env` is exactly the process environment. The command joins
    `cgroup` (its limits, from `cgroups.applied`) before it execs. `insecure` (RUN
    --security=insecure) leaves the command with the sandbox's own privileges: no user namespace
    of its own, /proc as mounted. `confinement` (Docker's default capabilities and seccomp
    profile, confine.py) is applied in the command's process just before exec; None leaves the
    command what the sandbox gives it. `hosts` are (name, address) lines appended to the
    generated /etc/hosts (--add-host); `ulimits` are set in the command's process before it
    drops its privileges (--ulimit); `shm_size` is the size of the /dev/shm tmpfs, None for
    Docker's 64 MiB (--shm-size)."""

    lowerdirs: tuple[str, ...]
    upperdir: str
    workdir: str
    scratch: str
    argv: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    groups: tuple[int, ...] = ()
    network: str = "host"
    hostname: str = "buildkitsandbox"
    cgroup: Group = Group()
    insecure: bool = False
    confinement: Confinement | None = None
    mounts: tuple[MountPoint, ...] = ()
    hosts: tuple[tuple[str, str], ...] = ()
    ulimits: tuple[Ulimit, ...] = ()
    shm_size: int | None = None


class Sandbox(Protocol):
    """`overlay` says whether the root is an overlay (changes land in `upperdir`) or the caller's
    materialized root in `upperdir`, changed in place (the walk-diff fallback). `nodev` says
    whether the root is mounted nodev: where it cannot be (chroot), a materialized root must not
    hold the image's device nodes, only inert placeholders (layers/walkdiff.py)."""

    name: str
    overlay: bool
    nodev: bool

    def run(self, spec: RunSpec, output: Callable[[bytes], None]) -> int:
        """Run to completion, streaming stdout and stderr (together) to `output`; returns the
        exit status (128+N when killed by signal N). Interrupting the caller kills the command
        and leaves no process or mount behind."""
