"""Where RUN commands execute. Isolation is a strategy chosen once at start-up, not a branch in
every function: each strategy runs a `RunSpec` and reports the exit status, and the build does
not care how it was isolated. `choose_sandbox` probes and says why it chose what it chose.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Protocol

from builder.sandbox.cgroups import Group


@dataclass(frozen=True)
class RunSpec:
    """One command over an image.

    `lowerdirs` are snapshot directories in overlayfs format, lowest first (none for FROM
    scratch); every change lands in `upperdir` (empty beforehand), overlayfs's `workdir` lies on
    the same filesystem, and `scratch` is a private directory for the sandbox's own files.
    `argv` is already shell-wrapped; `env` is exactly the process environment. The command joins
    `cgroup` (its limits, from `cgroups.applied`) before it execs."""

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
    hostname: str = "pybuild"
    cgroup: Group = Group()


class Sandbox(Protocol):
    """`overlay` says whether the root is an overlay (changes land in `upperdir`) or the caller's
    materialized root in `upperdir`, changed in place (the walk-diff fallback)."""

    name: str
    overlay: bool

    def run(self, spec: RunSpec, output: Callable[[bytes], None]) -> int:
        """Run to completion, streaming stdout and stderr (together) to `output`; returns the
        exit status (128+N when killed by signal N). Interrupting the caller kills the command
        and leaves no process or mount behind."""


def choose_sandbox() -> tuple[Sandbox, str]:
    """The best isolation this process can get, and why."""
    from builder.sandbox.namespaces import NamespaceSandbox, probe

    usable, reason = probe()
    if usable:
        return NamespaceSandbox(overlay=os.environ.get("PYBUILD_NO_OVERLAY") != "1"), reason
    raise OSError(f"no sandbox available: {reason}")
