"""Temp files of builds that died (SIGKILL during a RUN): `du` counts them, the next build and
`prune` remove them, and a live build's temp files survive both."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from layers import scratch
from tests.support import ROOT, busybox_base, pybuild, require


def wait_for(condition, what: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def dead_temp(cache: Path) -> tuple[int, str]:
    """du's line for the temp files of dead builds: (count, size text)."""
    du = pybuild("du", env={"PYBUILD_CACHE_DIR": str(cache)})
    assert du.returncode == 0, du.stderr
    match = re.search(rb"^temporary files of dead builds\s+(\d+) \((.*)\)$", du.stdout, re.M)
    assert match, du.stdout
    return int(match.group(1)), match.group(2).decode()


def run_dirs(cache: Path) -> list[Path]:
    """The RUN upper dirs under the cache's temp space, live or dead. A process's temp directory
    is made under a `.new-*` name and renamed when ready: one may vanish while it is listed,
    and then the listing is taken again."""
    while True:
        try:
            return sorted((cache / "tmp").glob("*/run-*/upper"))
        except FileNotFoundError:
            continue


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    cache = tmp_path / "cache"
    loaded = pybuild("load", "-i", str(busybox_base(tmp_path)), env={"PYBUILD_CACHE_DIR": str(cache)})
    assert loaded.returncode == 0, loaded.stderr
    return cache


def context(tmp_path: Path, name: str, run: str) -> Path:
    directory = tmp_path / name
    directory.mkdir()
    (directory / "Dockerfile").write_text(f"FROM busybox:test\nRUN {run}\n")
    return directory


def start(cache: Path, directory: Path, output: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "builder.cli", "-o", str(output),
                             str(directory)], cwd=ROOT, stderr=subprocess.PIPE,
                            env=dict(os.environ, PYBUILD_CACHE_DIR=str(cache)))


def killed_in_run(cache: Path, tmp_path: Path, name: str) -> None:
    """A build SIGKILLed while its RUN has written 8 MB and sleeps."""
    directory = context(tmp_path, name, "dd if=/dev/zero of=/big bs=1M count=8 && sleep 300")
    process = start(cache, directory, tmp_path / f"{name}.tar")
    wait_for(lambda: any((d / "big").exists() and (d / "big").stat().st_size == 8 << 20
                         for d in run_dirs(cache)), "the RUN to write /big")
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()


def test_a_killed_build_leaves_temp_files_that_du_counts_and_the_next_build_removes(cache, tmp_path):
    killed_in_run(cache, tmp_path, "first")
    assert wait_for(lambda: dead_temp(cache)[0] == 1, "the dead build's lock to go")
    count, size = dead_temp(cache)
    assert size.endswith("MB") and float(size[:-2]) >= 8.3
    again = pybuild("-o", str(tmp_path / "quick.tar"), str(context(tmp_path, "quick", "true")),
                    env={"PYBUILD_CACHE_DIR": str(cache)})
    assert again.returncode == 0, again.stderr
    wait_for(lambda: dead_temp(cache) == (0, "0B"), "the background removal")
    assert run_dirs(cache) == [] and list((cache / "tmp").iterdir()) == []


def test_prune_removes_the_temp_files_of_killed_builds(cache, tmp_path):
    for name in ("one", "two"):
        killed_in_run(cache, tmp_path, name)
    wait_for(lambda: dead_temp(cache)[0] >= 1, "the dead builds' locks to go")
    pruned = pybuild("prune", env={"PYBUILD_CACHE_DIR": str(cache)})
    assert pruned.returncode == 0 and b"freed 8." in pruned.stdout, pruned.stdout
    assert dead_temp(cache) == (0, "0B")
    assert list((cache / "tmp").iterdir()) == []


def test_a_live_build_keeps_its_temp_files_through_another_build_and_prune(cache, tmp_path):
    live = start(cache, context(tmp_path, "live", "echo kept > /kept && sleep 15"),
                 tmp_path / "live.tar")
    upper = wait_for(lambda: [d for d in run_dirs(cache) if (d / "kept").exists()],
                     "the live RUN to start")[0]
    other = pybuild("-o", str(tmp_path / "other.tar"), str(context(tmp_path, "other", "true")),
                    env={"PYBUILD_CACHE_DIR": str(cache)})
    assert other.returncode == 0, other.stderr
    for args in (["prune"], ["prune", "--all"]):
        assert pybuild(*args, env={"PYBUILD_CACHE_DIR": str(cache)}).returncode == 0
    assert dead_temp(cache) == (0, "0B")
    assert live.poll() is None, "the live build ended before the others were done"
    assert (upper / "kept").read_text() == "kept\n"
    _, stderr = live.communicate(timeout=120)
    assert live.returncode == 0, stderr.decode()
    with tarfile.open(tmp_path / "live.tar") as archive:
        top = json.load(archive.extractfile("manifest.json"))[0]["Layers"][-1]
        with tarfile.open(fileobj=archive.extractfile(top)) as layer:
            names = layer.getnames()
    assert "kept" in names
    assert list((cache / "tmp").iterdir()) == []


HOLDER = """
import sys, time
from layers.scratch import private_dir
with open(private_dir(sys.argv[1]) + "/blob-partial", "wb") as handle:
    handle.write(b"x" * 1000)
print("ready", flush=True)
time.sleep(300)
"""


def test_the_lock_not_the_name_or_age_decides_what_is_dead(tmp_path):
    """Any process's temp space (a blob or snapshot half written) is judged by its lock: a young
    `.new-` directory being set up is left alone, a live holder's never goes, a dead one's does."""
    root = tmp_path / "cache"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(root)], cwd=ROOT,
                              stdout=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert holder.stdout.readline() == b"ready\n"
    (root / "tmp" / ".new-abc").mkdir()
    assert scratch.leftovers(str(root)) == scratch.Leftovers(0, 0)
    assert scratch.sweep(str(root)) == scratch.Leftovers(0, 0)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    holder.stdout.close()
    assert scratch.leftovers(str(root)) == scratch.Leftovers(1, 1000)
    old = time.time() - 3600
    os.utime(root / "tmp" / ".new-abc", (old, old))
    assert scratch.sweep(str(root)) == scratch.Leftovers(2, 1000)
    assert list((root / "tmp").iterdir()) == []


def test_a_group_a_killed_build_left_goes_with_the_next_build_that_makes_one(tmp_path):
    """A SIGKILLed pybuild cannot remove its RUN's cgroup; the next build with a limit does, once
    the group's pid is gone and it is older than a build could take to join it."""
    from builder.limits import Limits
    from builder.sandbox import cgroups
    warnings: list[str] = []
    with cgroups.applied(Limits(64 << 20, None), warnings.append) as group:
        require(not warnings and group.memory, f"a writable memory cgroup ({warnings})")
        parent = os.path.dirname(group.memory)
    dead = int(Path("/proc/sys/kernel/pid_max").read_text())  # no process ever has this pid
    stale, young = (os.path.join(parent, f"run-{dead}-{suffix}") for suffix in ("0ld", "y0ung"))
    for path in (stale, young):
        os.mkdir(path)
    try:
        old = time.time() - cgroups.STALE_SECONDS - 5
        os.utime(stale, (old, old))
        with cgroups.applied(Limits(64 << 20, None), warnings.append):
            pass
        assert not os.path.exists(stale) and os.path.isdir(young)
    finally:
        for path in (stale, young):
            if os.path.isdir(path):
                os.rmdir(path)


WRITER = """
import sys, time
from builder.output.atomicfile import replacing
with replacing(sys.argv[1]) as out:
    out.write(b"x" * (1 << 20))
    out.flush()
    print("ready", flush=True)
    time.sleep(300)
"""


def test_an_output_killed_while_written_leaves_nothing_beside_it(tmp_path):
    """The tarball (and --trace, --metadata-file, an exported cache's files) is written to a file
    without a name until it is complete: SIGKILL leaves no `.image.tar.XXXX` behind."""
    (tmp_path / "image.tar").write_bytes(b"the previous image")
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path / "image.tar")],
                              cwd=ROOT, stdout=subprocess.PIPE,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert writer.stdout.readline() == b"ready\n"
    assert sorted(os.listdir(tmp_path)) == ["image.tar"]
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    writer.stdout.close()
    assert sorted(os.listdir(tmp_path)) == ["image.tar"]
    assert (tmp_path / "image.tar").read_bytes() == b"the previous image"
