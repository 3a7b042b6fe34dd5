"""A cgroup for each RUN, carrying `--memory`, `--cpus` and `--pids-limit`: cgroup v2 (one unified
hierarchy) or v1 (a hierarchy per controller), wherever this machine mounts them.

The group is made under a `pybuild` parent in this process's own cgroup, so limits set on pybuild
still bound its RUNs, else under the hierarchy's root (v2 hands no controller to the children of
a group that holds processes). The command joins it just before it execs: its descendants are
all inside, and the sandbox's own processes, forks of pybuild that count pybuild's whole
resident size, stay out of the OOM killer's choice. A limit that cannot be applied is a warning,
never a silent no-op; the group is removed when the RUN ends, however it ends, and one a killed
pybuild left is removed by the next build that makes a group.
"""
from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from builder.limits import Limits

PERIOD_US = 100_000
PARENT = "pybuild"
STALE_SECONDS = 60
_FLAGS = {"memory": "--memory", "cpu": "--cpus", "pids": "--pids-limit"}
# Absent where swap is not accounted; the limit holds without them.
_OPTIONAL = {"memory.swap.max", "memory.memsw.limit_in_bytes"}


@dataclass(frozen=True)
class Hierarchy:
    mount: str
    own: str  # this process's group in it, as a directory
    unified: bool


@dataclass(frozen=True)
class Group:
    """A RUN's directory in each hierarchy that holds one of its limits."""

    directories: tuple[str, ...] = ()
    memory: str | None = None
    pids: str | None = None


def hierarchies() -> dict[str, Hierarchy]:
    """Each mounted controller's hierarchy, from /proc/self/cgroup and /proc/self/mountinfo."""
    mounts = []
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields = line.split()
            fstype, _, options = fields[fields.index("-") + 1:][:3]
            if fstype in ("cgroup", "cgroup2"):
                mounts.append((fstype, set(options.split(",")), fields[3], fields[4]))
    found: dict[str, Hierarchy] = {}
    with open("/proc/self/cgroup") as handle:
        for line in handle:
            _, names, path = line.rstrip("\n").split(":", 2)
            controllers = set(filter(None, names.split(",")))
            for fstype, options, root, mount in mounts:
                if fstype == ("cgroup" if names else "cgroup2") and controllers <= options:
                    inside = path == root or path.startswith(root.rstrip("/") + "/")
                    own = os.path.normpath(os.path.join(mount, os.path.relpath(path, root))
                                           if inside else mount)
                    for controller in controllers or _read(mount, "cgroup.controllers").split():
                        found.setdefault(controller, Hierarchy(mount, own, not names))
                    break
    return found


@contextlib.contextmanager
def applied(limits: Limits, warn: Callable[[str], None],
            parent: str | None = None) -> Iterator[Group]:
    """A group for one RUN with each limit this machine can apply, and a warning for each it
    cannot; on the way out, whatever of the RUN is left in it is killed and the group removed.
    `parent` (--cgroup-parent, checked by runoptions.parse_cgroup_parent) replaces the
    `pybuild` parent: from the hierarchy's root when it starts with `/`, else from this
    process's group; pybuild makes what is missing of it and leaves it, as Docker does."""
    made: list[str] = []
    try:
        yield _create(limits, made, warn, parent)
    finally:
        for directory in made:
            _remove(directory, warn)


def _create(limits: Limits, made: list[str], warn: Callable[[str], None],
            parent: str | None) -> Group:
    wanted = [controller for controller, value in (("memory", limits.memory_bytes),
                                                   ("cpu", limits.cpus), ("pids", limits.pids))
              if value is not None]
    if parent is not None and not wanted:
        wanted = ["pids"]  # no limit, but a group under --cgroup-parent all the same
    if not wanted:
        return Group()
    try:
        found = hierarchies()
    except OSError:  # a kernel without cgroups, or their mounts hidden
        found = {}
    name = f"run-{os.getpid()}-{os.urandom(4).hex()}"
    directories: dict[str, str] = {}
    joined: dict[str, str] = {}
    for controller in wanted:
        # The default --pids-limit is a safety net, not a request: skipped quietly where it
        # cannot be applied.
        say = warn if controller != "pids" or limits.pids_asked or parent is not None \
            else lambda text: None
        flag = "--cgroup-parent" if controller == "pids" and limits.pids is None \
            else _FLAGS[controller]
        hierarchy = found.get(controller)
        if hierarchy is None:
            say(f"{flag} is not applied: no cgroup hierarchy here has the "
                f"{controller} controller")
            continue
        try:
            if hierarchy.mount not in directories:
                siblings = [c for c in wanted if found.get(c) == hierarchy]
                directories[hierarchy.mount] = _make(hierarchy, siblings, name, made, parent)
            directory = directories[hierarchy.mount]
            for file, value in _settings(controller, limits, hierarchy.unified).items():
                if file not in _OPTIONAL or os.path.exists(os.path.join(directory, file)):
                    _write(os.path.join(directory, file), value)
        except OSError as error:
            say(f"{flag} is not applied: cannot set up a cgroup "
                f"({error.strerror}: {error.filename})")
            continue
        joined[controller] = directory
    return Group(tuple(dict.fromkeys(joined.values())), joined.get("memory"), joined.get("pids"))


def _make(hierarchy: Hierarchy, controllers: list[str], name: str, made: list[str],
          asked: str | None) -> str:
    """The RUN's directory under `pybuild` in this process's group, else in the root; or under
    the --cgroup-parent `asked`."""
    failure: OSError | None = None
    if asked is None:
        bases = [(base, PARENT) for base in dict.fromkeys((hierarchy.own, hierarchy.mount))]
    else:
        bases = [(hierarchy.mount if asked.startswith("/") else hierarchy.own, asked.lstrip("/"))]
    for base, below in bases:
        parent = os.path.join(base, below)
        try:
            level = base
            for component in below.split("/"):
                if hierarchy.unified:
                    _delegate(level, controllers)
                level = os.path.join(level, component)
                with contextlib.suppress(FileExistsError):
                    os.mkdir(level)
            _remove_stale(parent)
            if hierarchy.unified:
                _delegate(parent, controllers)
            directory = os.path.join(parent, name)
            os.mkdir(directory)
        except OSError as error:
            failure = error
            continue
        made.append(directory)
        return directory
    raise failure


def _remove_stale(parent: str) -> None:
    """Remove the groups RUNs of dead pybuilds left under `parent` (a SIGKILL ends pybuild before
    it can): `run-<pid>-<random>` whose pid is gone, made over STALE_SECONDS ago (a live build
    in another pid namespace, whose pid this one cannot see, has just made it or is in it).
    rmdir removes only an empty group; a reused pid only keeps a stale one a while longer."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        kind, _, rest = name.partition("-")
        pid = rest.partition("-")[0]
        if kind != "run" or not pid.isdigit() or os.path.exists(f"/proc/{pid}"):
            continue
        path = os.path.join(parent, name)
        with contextlib.suppress(OSError):
            if os.stat(path).st_mtime < time.time() - STALE_SECONDS:
                os.rmdir(path)


def _delegate(directory: str, controllers: list[str]) -> None:
    """Let the children of `directory` have `controllers` (v2 hands them down a level at a time)."""
    enabled = _read(directory, "cgroup.subtree_control").split()
    missing = " ".join(f"+{c}" for c in controllers if c not in enabled)
    if missing:
        _write(os.path.join(directory, "cgroup.subtree_control"), missing)


def _settings(controller: str, limits: Limits, unified: bool) -> dict[str, str]:
    """The files that set a limit, swap forbidden as Docker does when only --memory is given."""
    if controller == "memory":
        size = str(limits.memory_bytes)
        if unified:
            return {"memory.max": size, "memory.swap.max": "0"}
        return {"memory.limit_in_bytes": size, "memory.memsw.limit_in_bytes": size}
    if controller == "pids":
        return {"pids.max": str(limits.pids or "max")}
    quota = str(round(limits.cpus * PERIOD_US))
    if unified:
        return {"cpu.max": f"{quota} {PERIOD_US}"}
    return {"cpu.cfs_period_us": str(PERIOD_US), "cpu.cfs_quota_us": quota}


def join_descriptors(group: Group) -> tuple[int, ...]:
    """Descriptors through which a process joins the group, opened before the sandbox's root hides
    /sys/fs/cgroup (and closed by exec). The joiner is a fresh fork, one thread: on v1 it moves by
    `tasks`, 0.06 ms here against 3 to 6 ms for `cgroup.procs` (which waits for an RCU grace
    period to move a whole thread group); v2 has only `cgroup.procs`."""
    return tuple(os.open(os.path.join(d, "tasks" if os.path.exists(os.path.join(d, "tasks"))
                                      else "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)
                 for d in group.directories)


def join(descriptors: tuple[int, ...]) -> None:
    """Move the calling process into the group (`0` is the writer, in any pid namespace)."""
    for descriptor in descriptors:
        os.write(descriptor, b"0")


def out_of_memory(group: Group, status: int) -> bool:
    """Whether the OOM killer ended a process of the group; read before the group is removed."""
    if group.memory is None:
        return False
    events = os.path.join(group.memory, "memory.events")
    record = _counters(events if os.path.exists(events)
                       else os.path.join(group.memory, "memory.oom_control"))
    if "oom_kill" in record:
        return record["oom_kill"] > 0
    # v1 before Linux 4.13 counts no kills: a SIGKILL after the limit was reached is one.
    return status == 128 + signal.SIGKILL and (
        record.get("under_oom", 0) > 0 or int(_read(group.memory, "memory.failcnt")) > 0)


def pids_exhausted(group: Group) -> bool:
    """Whether a fork or clone in the group failed at its pids limit."""
    if group.pids is None:
        return False
    try:
        return _counters(os.path.join(group.pids, "pids.events")).get("max", 0) > 0
    except FileNotFoundError:  # before Linux 4.8
        return False


def _remove(directory: str, warn: Callable[[str], None]) -> None:
    """Remove a RUN's group, killing whatever is still in it (the teardown of an interrupted
    RUN's pid namespace may not be over); a dying process keeps a group busy for a moment."""
    deadline = time.monotonic() + 10
    while True:
        try:
            os.rmdir(directory)
            return
        except FileNotFoundError:
            return
        except OSError as error:
            if error.errno != errno.EBUSY or time.monotonic() > deadline:
                warn(f"cgroup {directory} is left behind: {error.strerror}")
                return
        for pid in _read(directory, "cgroup.procs").split():
            if pid != "0":  # a process of a pid namespace this one cannot see; kill(0) is ours
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        time.sleep(0.01)


def _counters(path: str) -> dict[str, int]:
    with open(path) as handle:
        return {key: int(value) for key, value in (line.split() for line in handle)}


def _read(directory: str, name: str) -> str:
    with open(os.path.join(directory, name)) as handle:
        return handle.read()


def _write(path: str, value: str) -> None:
    descriptor = os.open(path, os.O_WRONLY)
    try:
        os.write(descriptor, value.encode())
    except OSError as error:
        raise OSError(error.errno, error.strerror, path) from None
    finally:
        os.close(descriptor)
