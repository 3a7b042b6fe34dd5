"""Where RUN commands execute. Isolation is a strategy chosen once per build, not a branch in
every function: each strategy runs a `RunSpec` (spec.py) and reports the exit status, and the
build does not care how it was isolated. `choose_sandbox` probes and says why it chose what it
chose.

`namespaces` (namespaces.py) as root; `rootless`, the same inside the user namespace a non-root
build enters first (userns.py); `chroot` (chroot.py) where unshare is forbidden.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace

from builder.sandbox.spec import Sandbox


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


def choice_record(choice: Choice) -> dict:
    """A choice as JSON data, to remember between builds (remembered.py)."""
    return {"strategy": choice.sandbox.name, "overlay": choice.sandbox.overlay,
            "reason": choice.reason, "warning": choice.warning}


def choice_from(record: dict | None) -> Choice | None:
    """A choice back from `choice_record`'s data; None for anything else."""
    if record is None or not isinstance(record.get("reason"), str) \
            or not isinstance(record.get("warning"), (str, type(None))):
        return None
    strategy, overlay = record.get("strategy"), record.get("overlay")
    if strategy in ("namespaces", "rootless") and isinstance(overlay, bool):
        from builder.sandbox.namespaces import NamespaceSandbox
        sandbox: Sandbox = NamespaceSandbox(overlay, rootless=strategy == "rootless")
    elif strategy == "chroot":
        from builder.sandbox.chroot import ChrootSandbox
        sandbox = ChrootSandbox()
    else:
        return None
    return Choice(sandbox, record["reason"], record["warning"])


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
