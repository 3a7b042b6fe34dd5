"""What the sandbox's probes found, kept between builds.

Before its first RUN a build learns what this host allows: which strategy works (throwaway
children try unshare, mounts and an overlay on the cache's filesystem), whether Docker's
capabilities and seccomp profile can be applied, and libseccomp's BPF program for the profile:
four forks and a compilation, about 40 ms of every build. The answers depend only on the facts
`facts_key` reads: the kernel and this boot, who this process is (ids, user namespace maps,
capability sets, its own seccomp filter and no_new_privs, its security label), the sysctls that
gate user namespaces, the filesystem of the cache root and its mount options, the environment
switches the probes read, libseccomp's version and pybuild's sandbox code. The answers are kept
in the cache root under a digest of those facts, so a change of any of them probes again, and a
RUN whose sandbox fails to set up forgets them: a wrong answer costs at most the build that met it.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any

_FORMAT = 1
_STATUS_FIELDS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp",
                  "Seccomp_filters")
_PROC_FILES = ("/proc/sys/kernel/random/boot_id", "/proc/self/uid_map", "/proc/self/gid_map",
               "/proc/self/setgroups", "/proc/self/attr/current",
               "/proc/sys/user/max_user_namespaces", "/proc/sys/user/max_mnt_namespaces",
               "/proc/sys/kernel/unprivileged_userns_clone",
               "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
               "/proc/sys/kernel/cap_last_cap", "/proc/sys/kernel/seccomp/actions_avail")
_SWITCHES = ("PYBUILD_NO_OVERLAY", "PYBUILD_WHITEOUT_FILES")


def facts_key(scratch: str, seccomp_version: str) -> str:
    """The digest of every fact the probes' answers depend on, for probes made in `scratch`."""
    hasher = hashlib.sha256(f"{_FORMAT} {os.uname()} {seccomp_version}".encode())
    hasher.update(repr((os.getuid(), os.geteuid(), os.getgid(), os.getegid(),
                        [os.environ.get(name) for name in _SWITCHES])).encode())
    for path in _PROC_FILES:
        hasher.update(f"\0{path}\0{_read(path)}".encode())
    status = _read("/proc/self/status").splitlines()
    hasher.update("\0".join(line for line in status
                            if line.split(":")[0] in _STATUS_FIELDS).encode())
    hasher.update(_mount_of(scratch).encode())
    here = os.path.dirname(os.path.abspath(__file__))
    for name in sorted(os.listdir(here)):
        if name.endswith(".py"):
            with open(os.path.join(here, name), "rb") as handle:
                hasher.update(name.encode() + b"\0" + handle.read())
    return hasher.hexdigest()


def recall(path: str, key: str, what: str) -> dict[str, Any] | None:
    """The answer remembered for `what` under `key`, or None (none, another key, unreadable)."""
    answers = _answers(path, key)
    found = answers.get(what)
    return found if isinstance(found, dict) else None


def remember(path: str, key: str, what: str, answer: dict[str, Any]) -> None:
    """Keep `answer` for `what` beside the other answers under `key` (those under an older key
    are dropped). Written whole to a temp file and renamed: a concurrent reader sees the old
    file or the new one."""
    answers = dict(_answers(path, key), **{what: answer})
    temp = f"{path}.{os.getpid()}"
    try:
        with open(temp, "w", encoding="utf-8") as handle:
            json.dump({"key": key, "answers": answers}, handle)
        os.replace(temp, path)
    except OSError:  # only a shortcut: a read-only or full cache root probes every time
        _remove(temp)


def forget(path: str) -> None:
    _remove(path)


def _answers(path: str, key: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("key") != key:
        return {}
    answers = data.get("answers")
    return answers if isinstance(answers, dict) else {}


def _mount_of(path: str) -> str:
    """How the filesystem holding `path` is mounted (type, source, options: an overlay can be
    mounted on some filesystems and not on others): the mountinfo line of the deepest mount
    point above it, without its mount ids."""
    path = os.path.realpath(path)
    best = ("", "")
    for line in _read("/proc/self/mountinfo").splitlines():
        fields = line.split(" ")
        if len(fields) < 6:
            continue
        point = fields[4]
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best[0]):
            best = (point, " ".join(fields[2:]))
    return best[1]


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError as error:
        return f"<{error.errno}>"


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
