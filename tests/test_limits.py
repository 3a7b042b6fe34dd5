"""--memory, --cpus and --pids-limit: what the options accept, and each RUN's cgroup on the real kernel: the
limits hold while it runs, an OOM kill fails the build and says so, no group outlives its RUN,
and a machine where no group can be made gets a warning."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from builder.limits import DEFAULT_PIDS, Limits, memory_text, parse_cpus, parse_memory, parse_pids
from builder.sandbox import cgroups
from builder.sandbox.namespaces import probe
from tests.support import ROOT, pybuild, require

MiB = 1 << 20
# busybox dd reads a whole 100 MB block into one buffer: well past any limit used here.
ALLOCATE = "dd if=/dev/zero bs=100M count=1 of=/dev/null"
SHOW_GROUPS = "cat /proc/self/cgroup"


@pytest.mark.parametrize("text, count", [
    ("6m", 6 * MiB), ("512m", 512 * MiB), ("1g", 1024 * MiB), ("2G", 2048 * MiB),
    ("1.5g", 1536 * MiB), ("67108864", 64 * MiB), ("6291456b", 6 * MiB), ("64MB", 64 * MiB),
    ("64mib", 64 * MiB), ("65536k", 64 * MiB),
])
def test_memory_sizes(text, count):
    assert parse_memory(text) == count


@pytest.mark.parametrize("text, message", [
    ("1k", "the minimum is 6m"), ("5m", "the minimum is 6m"), ("6291455", "the minimum is 6m"),
    ("x", "not a size"), ("", "not a size"), ("-1m", "not a size"), ("64q", "not a size"),
    ("m", "not a size"),
])
def test_bad_memory_sizes(text, message):
    with pytest.raises(ValueError, match=f"^--memory {re.escape(text)}: {message}"):
        parse_memory(text)


@pytest.mark.parametrize("count, text", [(6 * MiB, "6m"), (1536 * MiB, "1536m"), (1 << 30, "1g"),
                                         (6 * MiB + 1024, "6145k"), (6 * MiB + 1, "6291457b")])
def test_memory_is_shown_as_written(count, text):
    assert memory_text(count) == text


@pytest.mark.parametrize("text, cpus", [("0.5", 0.5), ("1", 1.0), ("0.01", 0.01), (".25", 0.25)])
def test_cpu_counts(text, cpus):
    assert parse_cpus(text) == cpus


@pytest.mark.parametrize("text, message", [
    ("0", "must be at least 0.01"), ("-1", "must be at least 0.01"),
    ("0.001", "must be at least 0.01"), ("x", "not a number"), ("1e3", "not a number"),
    ("nan", "not a number"), ("inf", "not a number"), ("", "not a number"),
    (str((os.cpu_count() or 1) + 1), "this machine has only"),
])
def test_bad_cpu_counts(text, message):
    with pytest.raises(ValueError, match=f"^--cpus {re.escape(text)}: {message}"):
        parse_cpus(text)


@pytest.mark.parametrize("text, count", [("50", 50), ("4096", 4096), ("0", None), ("-1", None)])
def test_pids_limits(text, count):
    assert parse_pids(text) == count


@pytest.mark.parametrize("option, value, message", [
    ("--memory", "1k", "the minimum is 6m"), ("--memory", "x", "not a size"),
    ("--cpus", "0", "must be at least 0.01"), ("--cpus", "-1", "must be at least 0.01"),
    ("--pids-limit", "-2", "must be a positive number, or 0 or -1"),
    ("--pids-limit", "1.5", "not a whole number"), ("--pids-limit", "many", "not a whole number"),
])
def test_bad_values_are_usage_errors(tmp_path, option, value, message):
    result = pybuild(option, value, str(tmp_path))
    assert result.returncode == 2
    assert f"pybuild: {option} {value}: {message}" in result.stderr


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> dict[str, str]:
    """A cache holding busybox:test, where cgroups with both limits can be made."""
    usable, reason = probe()
    require(usable, f"the namespaces sandbox ({reason})")
    warnings: list[str] = []
    with cgroups.applied(Limits(64 * MiB, 0.5, 64, pids_asked=True), warnings.append):
        pass
    require(not warnings, f"cgroups with memory, cpu and pids limits ({'; '.join(warnings)})")
    base = tmp_path_factory.mktemp("limits")
    subprocess.run([sys.executable, str(ROOT / "testdata/images/busybox/make.py"),
                    str(base / "busybox.tar"), "--tag", "busybox:test"], check=True)
    env = {"PYBUILD_CACHE_DIR": str(base / "cache")}
    assert pybuild("load", "-i", str(base / "busybox.tar"), env=env).returncode == 0
    return env


def context(tmp_path: Path, run: str) -> Path:
    directory = tmp_path / "context"
    directory.mkdir()
    (directory / "Dockerfile").write_text(f"FROM busybox:test\nRUN {run}\n")
    return directory


def run_groups(log: str) -> dict[str, list[str]]:
    """Where the RUN's own groups, as its /proc/self/cgroup printed them, can be on this host: in
    pybuild's group or the hierarchy's root, by controller."""
    found = cgroups.hierarchies()
    places: dict[str, list[str]] = {}
    for names, path in re.findall(r"^#\d+ \d+\.\d{3} \d+:([^:\n]*):(\S*/pybuild/run-\S+)$", log,
                                  re.M):
        for controller in names.split(",") if names else ("memory", "cpu", "pids"):
            name = os.path.basename(path)
            hierarchy = found[controller]
            places[controller] = [os.path.join(base, cgroups.PARENT, name)
                                  for base in (hierarchy.own, hierarchy.mount)]
    return places


def test_a_run_past_its_memory_is_killed_and_the_build_says_so(cache, tmp_path):
    result = pybuild("--no-cache", "--memory", "32m", "-o", str(tmp_path / "image.tar"),
                     str(context(tmp_path, f"{SHOW_GROUPS} && {ALLOCATE}")), env=cache)
    assert result.returncode == 1, result.stderr
    assert "RUN killed: out of memory (--memory 32m)" in result.stderr
    places = run_groups(result.stderr)
    assert "memory" in places
    assert not any(os.path.exists(p) for paths in places.values() for p in paths)


@pytest.mark.parametrize("options, controllers", [
    ((), ["pids"]), (("--pids-limit", "0"), []),
    (("--memory", "1g", "--cpus", "1"), ["cpu", "memory", "pids"])])
def test_the_same_run_passes_with_room(cache, tmp_path, options, controllers):
    result = pybuild(*options, "--no-cache", "-o", str(tmp_path / "image.tar"),
                     str(context(tmp_path, f"{SHOW_GROUPS} && {ALLOCATE}")), env=cache)
    assert result.returncode == 0, result.stderr
    places = run_groups(result.stderr)
    assert sorted(places) == controllers
    assert not any(os.path.exists(p) for paths in places.values() for p in paths)


def test_limits_hold_while_the_run_runs_and_its_groups_go_with_it(cache, tmp_path):
    """Read from the host while the RUN sleeps; then SIGTERM: the groups go with the RUN."""
    command = [sys.executable, "-m", "builder.cli", "--no-cache", "--cpus", "0.5", "--memory",
               "48m", "-o", str(tmp_path / "image.tar"),
               str(context(tmp_path, f"{SHOW_GROUPS} && echo ready && sleep 3041"))]
    process = subprocess.Popen(command, cwd=ROOT, env=dict(os.environ, **cache),
                               stderr=subprocess.PIPE, text=True)
    try:
        log = ""
        while not re.search(r"^#\d+ \d+\.\d{3} ready$", log, re.M):
            line = process.stderr.readline()
            assert line, f"pybuild ended before the RUN was ready:\n{log}"
            log += line
        places = run_groups(log)
        memory = next(p for p in places["memory"] if os.path.isdir(p))
        cpu = next(p for p in places["cpu"] if os.path.isdir(p))
        pids = next(p for p in places["pids"] if os.path.isdir(p))
        assert Path(pids, "pids.max").read_text().strip() == str(DEFAULT_PIDS)
        if os.path.exists(os.path.join(cpu, "cpu.max")):
            assert Path(cpu, "cpu.max").read_text().split() == ["50000", "100000"]
            assert Path(memory, "memory.max").read_text().strip() == str(48 * MiB)
        else:
            assert Path(cpu, "cpu.cfs_quota_us").read_text().strip() == "50000"
            assert Path(cpu, "cpu.cfs_period_us").read_text().strip() == "100000"
            assert Path(memory, "memory.limit_in_bytes").read_text().strip() == str(48 * MiB)
    finally:
        process.send_signal(signal.SIGTERM)
        _, rest = process.communicate(timeout=60)
    assert process.returncode == 143, log + rest
    assert not any(map(os.path.exists, (memory, cpu, pids)))
    assert subprocess.run(["pgrep", "-f", "sleep 3041"], capture_output=True).returncode == 1


def test_a_fork_bomb_stops_at_the_pids_limit_and_leaves_nothing_behind(cache, tmp_path):
    """300 sleeps in the background under --pids-limit 50: the shell cannot fork past it."""
    result = pybuild("--no-cache", "--pids-limit", "50", "-o", str(tmp_path / "image.tar"),
                     str(context(tmp_path, f"{SHOW_GROUPS} && "
                                           "for i in $(seq 300); do sleep 3042 & done; wait")),
                     env=cache, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "(it reached --pids-limit 50: no more processes could start)" in result.stderr
    assert "can't fork" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "image.tar").exists()
    places = run_groups(result.stderr)
    assert "pids" in places and not any(map(os.path.exists, places["pids"]))
    assert subprocess.run(["pgrep", "-f", "sleep 3042"], capture_output=True).returncode == 1


def test_where_no_group_can_be_made_the_build_goes_on_with_a_warning(cache, tmp_path):
    """The memory hierarchy read-only in a mount namespace of the build's own."""
    require(shutil.which("unshare") is not None, "unshare (util-linux)")
    mount = cgroups.hierarchies()["memory"].mount
    build = [sys.executable, "-m", "builder.cli", "--no-cache", "--memory", "32m", "-o",
             str(tmp_path / "image.tar"), str(context(tmp_path, "echo built"))]
    process = subprocess.run(["unshare", "--mount", "sh", "-c",
                              f'mount -o remount,bind,ro "$0" && exec "$@"', mount, *build],
                             cwd=ROOT, env=dict(os.environ, **cache), capture_output=True,
                             text=True, timeout=300)
    assert process.returncode == 0, process.stderr
    assert ("WARNING: --memory is not applied: cannot set up a cgroup (Read-only file system"
            in process.stderr)
