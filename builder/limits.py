"""Resource limits for every RUN (`--memory`, `--cpus`, `--pids-limit`), in `docker build`'s (and
`docker run`'s) syntax and bounds, so a command line written for Docker means the same here."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

from builder.units import parse_size

# Docker's floor: below it a container cannot even start its runtime.
MIN_MEMORY = 6 * 1024 * 1024
# The kernel's page counters are signed 64-bit byte counts.
MAX_MEMORY = (1 << 63) - 1
# The kernel's smallest CFS quota is 1 ms of a 100 ms period.
MIN_CPUS = 0.01
_NUMBER = re.compile(r"-?\d*\.?\d+")
# The processes and threads a RUN may have at once, unless --pids-limit says otherwise: twice
# podman's default (2048), far above what a parallel compile or a test suite starts, and an
# eighth of the kernel's default pid_max (32768), so a fork bomb in a RUN leaves the machine's
# other builds and services the pids they need.
DEFAULT_PIDS = 4096


@dataclass(frozen=True)
class Limits:
    """None means unlimited. `pids_asked`: --pids-limit was given, so a machine that cannot apply
    it gets a warning (the default limit is applied where it can be, silently skipped where not:
    a rootless build cannot make cgroups)."""

    memory_bytes: int | None = None
    cpus: float | None = None
    pids: int | None = DEFAULT_PIDS
    pids_asked: bool = False


def parse_limits(memory: str | None, cpus: str | None, pids: str | None = None) -> Limits:
    """The limits the options give; ValueError names the option and what it accepts."""
    return Limits(None if memory is None else parse_memory(memory),
                  None if cpus is None else parse_cpus(cpus),
                  DEFAULT_PIDS if pids is None else parse_pids(pids), pids is not None)


def parse_memory(text: str) -> int:
    """Bytes from `512m`, `1g`, `1.5g`, `67108864`: units are powers of 1024, as Docker's."""
    try:
        count = parse_size(text)
    except ValueError:
        raise ValueError(f"--memory {text}: not a size (bytes, or a number with b, k, m or g: "
                         "512m, 1g)") from None
    if count > MAX_MEMORY:
        raise ValueError(f"--memory {text}: too large; a cgroup holds at most {MAX_MEMORY} bytes "
                         "(8 EiB)")
    if count < MIN_MEMORY:
        raise ValueError(f"--memory {text}: the minimum is 6m (6 MiB), as Docker's")
    return count


def parse_pids(text: str) -> int | None:
    """A number of processes (threads count too), or 0 or -1 for no limit, as `docker run
    --pids-limit` takes it."""
    if not re.fullmatch(r"-?\d+", text.strip()):
        raise ValueError(f"--pids-limit {text}: not a whole number of processes (0 or -1 for "
                         "no limit)")
    value = int(text)
    if value < -1:
        raise ValueError(f"--pids-limit {text}: must be a positive number, or 0 or -1 for no "
                         "limit")
    return value if value > 0 else None


def parse_cpus(text: str) -> float:
    """A decimal number of CPUs (`0.5` is half of one), from 0.01 to the CPUs this machine has."""
    if not _NUMBER.fullmatch(text.strip()):
        raise ValueError(f"--cpus {text}: not a number of CPUs (0.5, 2)")
    value = float(text)
    if value < MIN_CPUS:
        raise ValueError(f"--cpus {text}: must be at least {MIN_CPUS}")
    available = os.cpu_count() or 1
    if value > available:
        raise ValueError(f"--cpus {text}: this machine has only {available} CPUs")
    return value


def memory_text(count: int) -> str:
    """A byte count the way it would be written on the command line (`64m`)."""
    for unit, size in (("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10)):
        if count % size == 0:
            return f"{count // size}{unit}"
    return f"{count}b"
