"""What every RUN gets from the command line besides its limits: `--add-host`, `--ulimit`,
`--shm-size` and `--cgroup-parent`, read in `docker build`'s syntax and refused where Docker
refuses them, so a command line written for Docker means the same here."""
from __future__ import annotations

import ipaddress
import re
import resource
from dataclasses import dataclass

from builder.units import parse_size

# Docker's names (go-units) for the resource limits setrlimit(2) knows. Python's resource module
# lacks RLIMIT_LOCKS: 10 on every Linux architecture.
ULIMITS = {"core": resource.RLIMIT_CORE, "cpu": resource.RLIMIT_CPU,
           "data": resource.RLIMIT_DATA, "fsize": resource.RLIMIT_FSIZE,
           "locks": getattr(resource, "RLIMIT_LOCKS", 10), "memlock": resource.RLIMIT_MEMLOCK,
           "msgqueue": resource.RLIMIT_MSGQUEUE, "nice": resource.RLIMIT_NICE,
           "nofile": resource.RLIMIT_NOFILE, "nproc": resource.RLIMIT_NPROC,
           "rss": resource.RLIMIT_RSS, "rtprio": resource.RLIMIT_RTPRIO,
           "rttime": resource.RLIMIT_RTTIME, "sigpending": resource.RLIMIT_SIGPENDING,
           "stack": resource.RLIMIT_STACK}
# A host name in /etc/hosts: one word, nothing that would start another entry or a comment.
_HOST_NAME = re.compile(r"[^\s#\x00-\x1f\x7f]+")
_CGROUP_NAME = re.compile(r"[^\x00-\x1f\x7f/]+")


@dataclass(frozen=True)
class Ulimit:
    """A resource limit of the RUN's command; -1 is unlimited (RLIM_INFINITY), as for Docker."""

    name: str
    soft: int
    hard: int

    @property
    def text(self) -> str:
        return f"{self.name}={self.soft}:{self.hard}"


@dataclass(frozen=True)
class RunOptions:
    """`hosts` are (name, address) lines appended to RUN's /etc/hosts in the order given;
    `shm_size` None is Docker's 64 MiB; `cgroup_parent` is relative to the hierarchy's root
    when it starts with `/`, else to pybuild's own cgroup."""

    hosts: tuple[tuple[str, str], ...] = ()
    ulimits: tuple[Ulimit, ...] = ()
    shm_size: int | None = None
    cgroup_parent: str | None = None

    def key_items(self) -> tuple[tuple[str, str], ...]:
        """What of these a RUN's cache key holds, as BuildKit's keys hold its exec metadata: only
        what is set, so builds without these options keep the keys they had."""
        items = (("add-host", " ".join(f"{n}:{a}" for n, a in self.hosts)),
                 ("ulimit", " ".join(u.text for u in self.ulimits)),
                 ("shm-size", str(self.shm_size or "")),
                 ("cgroup-parent", self.cgroup_parent or ""))
        return tuple((name, value) for name, value in items if value)


def parse_run_options(hosts: list[str], ulimits: list[str], shm_size: str | None,
                      cgroup_parent: str | None) -> RunOptions:
    """The options' values as RunOptions; ValueError names the option and what it accepts."""
    by_name = {u.name: u for u in map(parse_ulimit, ulimits)}  # the last of a name wins
    return RunOptions(tuple(map(parse_host, hosts)), tuple(by_name.values()),
                      None if shm_size is None else parse_shm_size(shm_size),
                      None if cgroup_parent is None else parse_cgroup_parent(cgroup_parent))


def parse_host(text: str) -> tuple[str, str]:
    """`NAME:IP` or `NAME=IP` (an IPv6 address may be in brackets) as (name, address), the
    address written as BuildKit writes it (Go's net.IP.String: `fe80:0::1` is `fe80::1`)."""
    name, separator, address = _split_host(text)
    if not separator or not name:
        raise ValueError(f"--add-host {text}: not NAME:IP")
    if not _HOST_NAME.fullmatch(name):
        raise ValueError(f"--add-host {text}: {name!r} is not a host name (no spaces, no "
                         "control characters, no #)")
    if address == "host-gateway":
        raise ValueError(f"--add-host {text}: host-gateway names Docker's bridge gateway; "
                         "pybuild has no bridge: RUN shares this machine's network (the host "
                         "is 127.0.0.1 there) or has none")
    if address.startswith("[") and address.endswith("]"):
        address = address[1:-1]
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise ValueError(f"--add-host {text}: invalid IP address {address!r}") from None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            raise ValueError(f"--add-host {text}: an address with a zone (%{ip.scope_id}) "
                             "cannot be written in /etc/hosts")
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
    return name, str(ip)


def _split_host(text: str) -> tuple[str, str, str]:
    """At the first `=`, else at the first `:` (a name has neither; an IPv6 address has `:`)."""
    if "=" in text:
        return text.partition("=")
    return text.partition(":")


def parse_ulimit(text: str) -> Ulimit:
    """`TYPE=SOFT[:HARD]` with Docker's type names; HARD defaults to SOFT."""
    name, separator, values = text.partition("=")
    if not separator:
        raise ValueError(f"--ulimit {text}: not TYPE=SOFT[:HARD]")
    if name not in ULIMITS:
        raise ValueError(f"--ulimit {text}: invalid ulimit type {name!r} (one of "
                         f"{', '.join(sorted(ULIMITS))})")
    soft_text, colon, hard_text = values.partition(":")
    limits = []
    for value in (soft_text, hard_text if colon else soft_text):
        if not re.fullmatch(r"-?\d+", value) or int(value) < -1 or int(value) >= 1 << 63:
            raise ValueError(f"--ulimit {text}: {value!r} is not a limit (a whole number, or -1 "
                             "for unlimited)")
        limits.append(int(value))
    soft, hard = limits
    if hard != -1 and (soft == -1 or soft > hard):
        raise ValueError(f"--ulimit {text}: the soft limit must be at most the hard limit")
    return Ulimit(name, soft, hard)


def parse_shm_size(text: str) -> int:
    """Bytes from `128m`, `1g`, `67108864`, as Docker reads --shm-size."""
    try:
        size = parse_size(text)
    except ValueError:
        size = 0
    if size <= 0:
        raise ValueError(f"--shm-size {text}: not a size greater than 0 (bytes, or a number "
                         "with k, m or g: 64m, 1g)")
    return size


def parse_cgroup_parent(text: str) -> str:
    """A path of cgroup names; `..`, `.`, empty names and control characters are refused, so
    the RUN's cgroup stays inside the hierarchy wherever pybuild runs."""
    names = text.strip("/").split("/")
    if not text.strip("/") or any(name in (".", "..") or not _CGROUP_NAME.fullmatch(name)
                                  for name in names):
        raise ValueError(f"--cgroup-parent {text}: not a cgroup path (names separated by /, "
                         "without . or .. or control characters)")
    return ("/" if text.startswith("/") else "") + "/".join(names)
