"""The user namespace of a rootless build: a non-root pybuild becomes root of its own user
namespace before it unpacks anything, as buildah and podman do.

The whole build, not only each RUN, runs in it: every snapshot it unpacks, every upper dir a RUN
fills, is then owned by ids of that namespace, so a base image's `1000:1000` is 1000 inside,
`chown 1000` in a RUN gives 1000, and the layer writer's lstat reads the in-container ids
without any translation (on disk they are the subordinate ids: container id N >= 1 is host id
subuid_start + N - 1). Its own uid becomes 0; the ranges /etc/subuid and /etc/subgid grant the
user become 1..count, written by the setuid helpers newuidmap and newgidmap (package uidmap).
Without them only the single id is mapped: root inside, and no other id exists.
"""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass

from builder.sandbox import linux, process

_IDENTITY = [(0, 0, 4294967295)]
# Where distributions switch unprivileged user namespaces off, and what switches them on.
_SWITCHES = (("/proc/sys/kernel/unprivileged_userns_clone", "0",
              "sysctl kernel.unprivileged_userns_clone=1"),
             ("/proc/sys/user/max_user_namespaces", "0", "sysctl user.max_user_namespaces=15000"),
             ("/proc/sys/kernel/apparmor_restrict_unprivileged_userns", "1",
              "sysctl kernel.apparmor_restrict_unprivileged_userns=0, or an AppArmor profile "
              "allowing userns for python3"))


class Refused(OSError):
    """No user namespace could be made; this process is unchanged."""


@dataclass(frozen=True)
class Range:
    """`count` ids from `start`, as a line of /etc/subuid grants them."""

    start: int
    count: int


def inside() -> bool:
    """Whether this process is in a user namespace other than the initial one."""
    return _map("uid") != _IDENTITY


def single_id() -> bool:
    """Whether only one uid is mapped (no subordinate ids)."""
    lines = _map("uid")
    return len(lines) == 1 and lines[0][2] == 1


def describe() -> str:
    """The uid map, as `0 -> 1001, 1-65536 -> 100000-165535`."""
    parts = []
    for inner, outer, count in _map("uid"):
        if count == 1:
            parts.append(f"{inner} -> {outer}")
        else:
            parts.append(f"{inner}-{inner + count - 1} -> {outer}-{outer + count - 1}")
    return ", ".join(parts)


def setgroups_allowed() -> bool:
    """False in a user namespace whose gid map was written without privilege (setgroups is then
    denied for good)."""
    try:
        with open("/proc/self/setgroups") as handle:
            return handle.read().strip() != "deny"
    except FileNotFoundError:
        return True


def subordinate(path: str, user: str, uid: int) -> Range | None:
    """The first range `path` (/etc/subuid or /etc/subgid) grants the user, by name or uid."""
    try:
        with open(path) as handle:
            for line in handle:
                fields = line.strip().split(":")
                if len(fields) == 3 and fields[0] in (user, str(uid)) \
                        and fields[1].isdigit() and fields[2].isdigit() and int(fields[2]) > 0:
                    return Range(int(fields[1]), int(fields[2]))
    except FileNotFoundError:
        pass
    return None


def enter() -> None:
    """Make this process root of a new user namespace, with the subordinate ids of its user when
    /etc/subuid and /etc/subgid grant some and newuidmap/newgidmap are installed, else with a
    single-id map. Call it before any thread starts. Raises Refused when unshare is refused (the
    process is as before), OSError when a map cannot be written (the process is unusable)."""
    uid, gid = os.getuid(), os.getgid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    ranges = subordinate("/etc/subuid", user, uid), subordinate("/etc/subgid", user, uid)
    tools = shutil.which("newuidmap"), shutil.which("newgidmap")
    if None in ranges or None in tools:
        _unshare()
        try:
            _write("/proc/self/setgroups", "deny")
            _write("/proc/self/uid_map", f"0 {uid} 1")
            _write("/proc/self/gid_map", f"0 {gid} 1")
        except OSError as error:
            raise OSError(_hinted(f"cannot map uid {uid} in a user namespace: "
                                  f"{process.describe(error)}")) from None
        return
    arguments = [[tool, str(os.getpid()), "0", str(own), "1", "1", str(sub.start), str(sub.count)]
                 for tool, own, sub in zip(tools, (uid, gid), ranges)]
    go_read, go_write = os.pipe()
    report_read, report_write = os.pipe()
    helper = os.fork()
    if helper == 0:  # stays in the parent namespace, where newuidmap must run
        os.close(go_write)
        os.close(report_read)
        _map_ids(go_read, report_write, arguments)
    os.close(go_read)
    os.close(report_write)
    try:
        _unshare()
        os.write(go_write, b"y")
    finally:
        os.close(go_write)
        with os.fdopen(report_read, "rb") as reader:
            report = reader.read().decode(errors="replace").strip()
        os.waitpid(helper, 0)
    if report:
        raise OSError(f"cannot map the subordinate ids of {user}: {report} (newuidmap and "
                      "newgidmap must be setuid root, package uidmap; without lines for the user "
                      "in /etc/subuid and /etc/subgid a single-id map is used)")


def _map_ids(go: int, report: int, arguments: list[list[str]]) -> None:
    """The helper: once the parent has unshared, write its maps; any failure is reported."""
    try:
        if os.read(go, 1):
            for argv in arguments:
                result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True)
                if result.returncode != 0:
                    os.write(report, f"{' '.join(argv)}: ".encode() + result.stderr)
                    break
    except BaseException as error:  # never let a forked child run pybuild's code
        os.write(report, f"newuidmap: {process.describe(error)}".encode(errors="replace"))
    os._exit(0)


def enter_nested(ready: int, mapped: int) -> None:
    """In a RUN's command: become root of a user namespace of its own, whose ids are those of the
    sandbox (its parent writes the map: `map_nested`). The command then holds capabilities only
    over what that namespace owns, which is nothing: the mount, pid, uts, ipc and network
    namespaces belong to the sandbox's. So it cannot mount, make device nodes, load modules or
    configure the host's network, while `chown 1000` still gives 1000."""
    linux.unshare(linux.CLONE_NEWUSER)
    os.write(ready, b"u")
    if os.read(mapped, 1) != b"y":
        raise OSError("the sandbox could not map the ids of the command's user namespace")
    os.close(ready)
    os.close(mapped)


def map_nested(child: int, ready: int, mapped: int) -> str | None:
    """In the sandbox's pid 1: once `child` has unshared (enter_nested), give its user namespace
    every id this one has, each to itself. Returns why that failed, or None."""
    try:
        if os.read(ready, 1) != b"u":
            return None  # the child ended before; it says why
        for kind in ("uid", "gid"):
            lines = "".join(f"{inner} {inner} {count}\n" for inner, _, count in _map(kind))
            _write(f"/proc/{child}/{kind}_map", lines)
        os.write(mapped, b"y")
        return None
    except OSError as error:
        return f"cannot map the command's user namespace: {process.describe(error)}"
    finally:
        os.close(ready)
        os.close(mapped)


def refused() -> str:
    """Why this process cannot make a user namespace (tried in a throwaway child)."""
    uid = os.getuid()
    failure = process.attempt(
        ("unshare(CLONE_NEWUSER)", lambda: linux.unshare(linux.CLONE_NEWUSER)),
        ("write uid_map", lambda: _write("/proc/self/uid_map", f"0 {uid} 1")))
    return _hinted(failure or "unknown error")


def _unshare() -> None:
    try:
        linux.unshare(linux.CLONE_NEWUSER)
    except OSError as error:
        raise Refused(_hinted(f"unshare(CLONE_NEWUSER): {process.describe(error)}")) from None


def _hinted(message: str) -> str:
    for path, value, fix in _SWITCHES:
        try:
            with open(path) as handle:
                if handle.read().strip() == value:
                    return f"{message}; {path} is {value}: {fix}"
        except OSError:
            continue
    return message


def _map(kind: str) -> list[tuple[int, int, int]]:
    with open(f"/proc/self/{kind}_map") as handle:
        return [tuple(int(field) for field in line.split()) for line in handle if line.strip()]


def _write(path: str, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)
