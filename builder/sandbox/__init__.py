"""Where RUN commands execute. Isolation is a strategy chosen once per build, not a branch in
every function: each strategy runs a `RunSpec` and reports the exit status, and the build does
not care how it was isolated. `choose_sandbox` probes and says why it chose what it chose.

`namespaces` (namespaces.py) as root; `rootless`, the same inside the user namespace a non-root
build enters first (userns.py); `chroot` (chroot.py) where unshare is forbidden.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Protocol

from builder.sandbox.cgroups import Group

if TYPE_CHECKING:
    from builder.sandbox.confine import Confinement
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
    command what the sandbox gives it."""

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


@dataclass(frozen=True)
class Choice:
    """A strategy, why it was chosen, and what the build log must warn about it."""

    sandbox: Sandbox
    reason: str
    warning: str | None = None


class Unavailable(Exception):
    """A strategy cannot work here; the message says why."""


def prepare(preference: str) -> None:
    """Called by a process that is not root, before its build unpacks anything: if the build may
    be rootless, the process moves into a user namespace of its own now (userns.py), for good:
    every file the build writes, snapshots included, must be owned by that namespace's ids.
    Raises OSError when rootless was asked for and cannot be had."""
    if preference not in ("auto", "rootless"):
        return
    from builder.sandbox import userns
    try:
        userns.enter()
    except userns.Refused as error:
        if preference == "rootless":
            raise OSError(f"--isolation rootless cannot work here: {error}") from None


def choose_sandbox(preference: str, scratch: str) -> Choice:
    """The strategy for this build's RUNs: `preference`, or for `auto` the strongest one this
    process can have, with the reason (for `auto`, also why not the stronger ones). Probes may
    make directories in `scratch`, which must be on the cache's filesystem."""
    if preference != "auto":
        try:
            return _STRATEGIES[preference](scratch)
        except Unavailable as error:
            raise OSError(f"--isolation {preference} cannot work here: {error}") from None
    from builder.sandbox import userns
    rootless = os.geteuid() != 0 or userns.inside()
    order = ("rootless", "chroot") if rootless else ("namespaces", "chroot")
    refusals = []
    for name in order:
        try:
            choice = _STRATEGIES[name](scratch)
        except Unavailable as error:
            refusals.append(f"{name}: {error}")
            continue
        return replace(choice, reason="; ".join(refusals + [choice.reason]))
    raise OSError("no sandbox can run RUN here: " + "; ".join(refusals)
                  + (_NOT_ROOT_WAYS_OUT if os.geteuid() != 0 else ""))


_NOT_ROOT_WAYS_OUT = (
    ". Not root, and no user namespace to be root in: RUN needs CAP_SYS_CHROOT (chroot) or "
    "user namespaces (rootless). Either run pybuild as root in the container (`docker run "
    "--user 0`, `user: root` in GitLab CI, `runAsUser: 0` in Kubernetes: Docker's default "
    "capabilities are enough, no --privileged), or let it make user namespaces (`docker run "
    "--security-opt seccomp=unconfined --security-opt apparmor=unconfined`, and subordinate "
    "ids for the user in /etc/subuid and /etc/subgid). A Dockerfile without RUN builds as is")


def _namespaces(scratch: str) -> Choice:
    from builder.sandbox import userns
    if userns.inside():
        raise Unavailable("this process is in a user namespace: that is the rootless strategy")
    sandbox, how = _namespace_sandbox(scratch, rootless=False)
    return Choice(sandbox, f"running as root; {how}")


def _rootless(scratch: str) -> Choice:
    from builder.sandbox import userns
    if not userns.inside():
        if os.geteuid() == 0:
            raise Unavailable("running as root: the namespaces strategy needs no user namespace")
        raise Unavailable(f"no user namespace: {userns.refused()}")
    sandbox, how = _namespace_sandbox(scratch, rootless=True)
    warning = None
    if userns.single_id():
        warning = ("rootless with a single-id map (no ids for this user in /etc/subuid and "
                   "/etc/subgid, or no newuidmap): only root exists inside, so chown to another "
                   "id and USER other than root fail in RUN, and the files of the image belong "
                   "to root. Grant subordinate ids, e.g. `usermod --add-subuids 100000-165535 "
                   "--add-subgids 100000-165535 USER` (package uidmap)")
    return Choice(sandbox, f"not root: a user namespace maps uids {userns.describe()}; {how}",
                  warning)


def _namespace_sandbox(scratch: str, rootless: bool) -> tuple[Sandbox, str]:
    """The namespaces sandbox, if this process can make the namespaces, and how it works."""
    from builder.sandbox.namespaces import NamespaceSandbox, probe
    usable, why = probe()
    if not usable:
        raise Unavailable(why)
    overlay, how = _overlay(scratch, userxattr=rootless)
    return NamespaceSandbox(overlay, rootless), f"{why}; {how}"


def _chroot(scratch: str) -> Choice:
    from builder.sandbox.chroot import ChrootSandbox, probe
    failure = probe(scratch)
    if failure is not None:
        raise Unavailable(failure)
    return Choice(ChrootSandbox(), "chroot into a copy of the image, diffed after each RUN: no "
                                   "pid, mount or network namespace")


def _overlay(scratch: str, userxattr: bool) -> tuple[bool, str]:
    """Whether RUN gets an overlay root or a materialized copy (the walk-diff fallback), and why."""
    if os.environ.get("PYBUILD_NO_OVERLAY") == "1":
        return False, "PYBUILD_NO_OVERLAY=1: the image is copied and diffed"
    if os.environ.get("PYBUILD_WHITEOUT_FILES") == "1":
        return False, "PYBUILD_WHITEOUT_FILES=1: the image is copied and diffed"
    from builder.sandbox.rootfs import overlay_refused
    failure = overlay_refused(scratch, userxattr)
    if failure is not None:
        return False, f"overlayfs cannot be mounted ({failure}): the image is copied and diffed"
    return True, "overlayfs" + (" with userxattr" if userxattr else "")


_STRATEGIES = {"namespaces": _namespaces, "rootless": _rootless, "chroot": _chroot}
