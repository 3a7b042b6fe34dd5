"""Stages that need nothing of each other are built at the same time (builder/stagepool.py), on
the busybox test base with the namespaces sandbox: they really overlap, give the image a build of
one stage at a time gives, keep each output line on its own step, stop together when one fails
or the build is interrupted, and fork sandboxes from many threads without ever hanging."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from builder.cache.root import CacheRoot
from tests.support import ROOT, busybox_base, pybuild

# Each stage's RUN marks its arrival in a cache mount both share, then waits (at most WAIT tenths
# of a second) for the other's mark: both succeed only if the two RUNs run at the same time.
MEETING = """\
FROM busybox:test AS a
ARG TOKEN WAIT=600
RUN --mount=type=cache,id=meet,target=/meet touch /meet/a-$TOKEN && \\
    for i in $(seq $WAIT); do [ -e /meet/b-$TOKEN ] && break; sleep 0.1; done; \\
    [ -e /meet/b-$TOKEN ] && echo a met b > /a
FROM busybox:test AS b
ARG TOKEN WAIT=600
RUN --mount=type=cache,id=meet,target=/meet touch /meet/b-$TOKEN && \\
    for i in $(seq $WAIT); do [ -e /meet/a-$TOKEN ] && break; sleep 0.1; done; \\
    [ -e /meet/a-$TOKEN ] && echo b met a > /b
FROM busybox:test
COPY --from=a /a /
COPY --from=b /b /
"""

FAILING = """\
FROM busybox:test AS slow
RUN echo slow started && sleep 3021
RUN echo never
FROM busybox:test AS broken
RUN sleep 1 && echo breaking && exit 3
FROM busybox:test
COPY --from=slow /etc /s
COPY --from=broken /etc /b
"""


@pytest.fixture(scope="module")
def busybox_tar(tmp_path_factory) -> Path:
    return busybox_base(tmp_path_factory.mktemp("base"))


def _project(tmp_path: Path, busybox_tar: Path, dockerfile: str) -> tuple[Path, dict[str, str]]:
    context = tmp_path / "context"
    context.mkdir(exist_ok=True)
    (context / "Dockerfile").write_text(dockerfile)
    env = {"PYBUILD_CACHE_DIR": str(tmp_path / "cache"), "SOURCE_DATE_EPOCH": "1700000000"}
    assert pybuild("load", "-i", str(busybox_tar), env=env).returncode == 0
    return context, env


def _left_behind(cache: Path) -> list[str]:
    """What a stopped build must not leave: temp files, mounts under the cache, RUN processes."""
    found = [f"tmp/{name}" for name in os.listdir(cache / "tmp")]
    with open("/proc/self/mountinfo") as mounts:
        found += [line for line in mounts if str(cache) in line]
    if subprocess.run(["pgrep", "-f", "sleep 3021"], capture_output=True).returncode == 0:
        found.append("a RUN's `sleep 3021` still runs")
    return found


def test_independent_stages_run_at_the_same_time(tmp_path: Path, busybox_tar: Path) -> None:
    context, env = _project(tmp_path, busybox_tar, MEETING)
    met = pybuild("--build-arg", f"TOKEN={uuid.uuid4().hex}", "--progress", "plain",
                  "-o", str(tmp_path / "out.tar"), str(context), env=env)
    assert met.returncode == 0, met.stderr
    # the proof fails when the stages are built one after another
    alone = pybuild("--max-parallelism", "1", "--build-arg", f"TOKEN={uuid.uuid4().hex}",
                    "--build-arg", "WAIT=5", "-o", str(tmp_path / "out.tar"), str(context),
                    env=env)
    assert alone.returncode == 1 and "Dockerfile:3" in alone.stderr, alone.stderr


@pytest.mark.parametrize("serial", [("--max-parallelism", "1"), ()], ids=["flag", "env"])
def test_serial_and_parallel_builds_give_the_same_image(tmp_path: Path, busybox_tar: Path,
                                                        serial: tuple[str, ...]) -> None:
    dockerfile = "".join(
        f"FROM busybox:test AS s{i}\nRUN mkdir /out && seq {i} 999 > /out/{i} && "
        f"echo {i} > /out/n\nRUN ln -s {i} /out/link && rm /out/n\n" for i in range(4))
    dockerfile += "FROM busybox:test\n" + "".join(
        f"COPY --from=s{i} /out /out{i}\n" for i in range(4))
    context, env = _project(tmp_path, busybox_tar, dockerfile)
    ids = {}
    for name, flags, extra in (("parallel", (), {}),
                               ("serial", serial, {} if serial else
                                {"PYBUILD_MAX_PARALLEL_STAGES": "1"})):
        cache = {"PYBUILD_CACHE_DIR": str(tmp_path / f"cache-{name}")}
        assert pybuild("load", "-i", str(busybox_tar), env=env | cache).returncode == 0
        iid = tmp_path / f"{name}.iid"
        exported = tmp_path / f"exported-{name}"
        result = pybuild(*flags, "--progress", "plain", "--iidfile", str(iid),
                         "--cache-to", f"type=local,dest={exported}",
                         "-o", str(tmp_path / f"{name}.tar"), str(context),
                         env=env | cache | extra)
        assert result.returncode == 0, result.stderr
        index = json.loads((exported / "index.json").read_text())
        ids[name] = iid.read_text(), [m["digest"] for m in index["manifests"]]
    assert ids["parallel"] == ids["serial"]


CYCLE = """\
FROM busybox:test AS a
ARG S=b
RUN true
COPY --from=$S /bin/true /x
FROM busybox:test AS b
ARG S=a
RUN true
COPY --from=$S /bin/true /y
FROM busybox:test
COPY --from=a /x /x
COPY --from=b /y /y
"""


@pytest.mark.parametrize("parallelism", ["2", "1"])
def test_a_cycle_through_stage_variables_is_refused(tmp_path: Path, busybox_tar: Path,
                                                   parallelism: str) -> None:
    """Neither stage names the other where the graph can see it, so both start at once: the
    second to ask for the other refuses the cycle, where a build of one stage at a time does."""
    context, env = _project(tmp_path, busybox_tar, CYCLE)
    result = pybuild("--max-parallelism", parallelism, "-o", str(tmp_path / "out.tar"),
                     str(context), env=env, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "circular dependency detected on stage" in result.stderr
    assert "ERROR: Dockerfile:4: COPY --from=b" in result.stderr or \
        "ERROR: Dockerfile:8: COPY --from=a" in result.stderr, result.stderr
    assert _left_behind(tmp_path / "cache") == []


def test_each_output_line_stays_with_its_step(tmp_path: Path, busybox_tar: Path) -> None:
    dockerfile = "".join(
        f"FROM busybox:test AS s{i}\n"
        f"RUN for n in $(seq 300); do echo s{i}-line-$n; done | tee /out\n"
        for i in range(3))
    dockerfile += "FROM busybox:test\n" + "".join(
        f"COPY --from=s{i} /out /out{i}\n" for i in range(3))
    context, env = _project(tmp_path, busybox_tar, dockerfile)
    result = pybuild("--progress", "json", "-o", str(tmp_path / "out.tar"), str(context), env=env)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    titles = {e["number"]: e["title"] for e in events if e["event"] == "StepStarted"}
    lines = [e for e in events if e["event"] == "StepOutput"]
    assert len(lines) == 900
    for event in lines:
        stage = event["line"].split("-line-")[0]
        assert titles[event["number"]].startswith(f"[{stage} 1/1] RUN"), event
    assert sorted(titles) == list(range(1, len(titles) + 1))


def test_a_failing_stage_stops_the_others(tmp_path: Path, busybox_tar: Path) -> None:
    context, env = _project(tmp_path, busybox_tar, FAILING)
    out = tmp_path / "out.tar"
    result = pybuild("--progress", "plain", "-o", str(out), str(context), env=env)
    assert result.returncode == 1, result.stderr
    assert "Dockerfile:5: RUN exited with status 3" in result.stderr
    lines = result.stderr.splitlines()
    slow = next(line.split()[0] for line in lines if "[slow 1/2] RUN" in line)
    broken = next(line.split()[0] for line in lines if "[broken 1/1] RUN" in line)
    assert f"{slow} CANCELED" in lines and any(line.startswith(f"{broken} ERROR")
                                               for line in lines)
    assert "[slow 2/2]" not in result.stderr and not out.exists()
    assert _left_behind(tmp_path / "cache") == []
    with sqlite3.connect(CacheRoot(str(tmp_path / "cache")).step_index) as index:
        slots = [slot for (slot,) in index.execute("SELECT slot FROM steps")]
    assert not [slot for slot in slots if "|slow|" in slot or "|broken|" in slot], \
        "a stopped or failed step recorded no result"


@pytest.mark.parametrize("signal_number, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_every_stage_and_leaves_nothing_behind(
        tmp_path: Path, busybox_tar: Path, signal_number: int, status: int) -> None:
    dockerfile = "".join(f"FROM busybox:test AS s{i}\nRUN echo s{i} && sleep 3021\n"
                         for i in range(3))
    dockerfile += "FROM busybox:test\n" + "".join(
        f"COPY --from=s{i} /bin /b{i}\n" for i in range(3))
    context, env = _project(tmp_path, busybox_tar, dockerfile)
    out = tmp_path / "out.tar"
    # SIGINT at its default, as in a terminal (a background pytest passes it on ignored)
    process = subprocess.Popen([sys.executable, "-m", "builder.cli", "--max-parallelism", "3",
                                "--progress", "plain", "-o", str(out), str(context)], cwd=ROOT,
                               env=dict(os.environ, **env), stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _sleeping() < 3:
            time.sleep(0.1)
        assert _sleeping() == 3
    finally:
        process.send_signal(signal_number)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == status, stderr
    assert not out.exists()
    assert _left_behind(tmp_path / "cache") == []


def _sleeping() -> int:
    found = subprocess.run(["pgrep", "-fx", "sleep 3021"], capture_output=True, text=True)
    return len(found.stdout.split())


def test_many_stages_fork_their_sandboxes_at_once_and_never_hang(tmp_path: Path,
                                                                 busybox_tar: Path) -> None:
    """Eight stages of RUNs that print while others fork (the log's lock, the import lock, the
    streams' locks are all taken by some thread at some fork), over and over: a child that
    deadlocked on a lock held at fork() would hang its RUN and the build (the timeout)."""
    stages = 8
    dockerfile = "".join(
        f"FROM busybox:test AS s{i}\n"
        + "".join(f"RUN for n in $(seq 50); do echo s{i}-{r}-$n; done > /f{r} && cat /f{r}\n"
                  for r in range(3))
        for i in range(stages))
    dockerfile += "FROM busybox:test\n" + "".join(
        f"COPY --from=s{i} /f2 /f{i}\n" for i in range(stages))
    context, env = _project(tmp_path, busybox_tar, dockerfile)
    for progress in ("plain", "json", "tty", "plain", "json"):
        result = pybuild("--no-cache", "--max-parallelism", str(stages), "--progress", progress,
                         "-o", str(tmp_path / "out.tar"), str(context), env=env, timeout=300)
        assert result.returncode == 0, result.stderr
        if progress == "plain":
            assert sum(f"-{r}-50" in result.stderr for r in range(3)) == 3
    assert _left_behind(tmp_path / "cache") == []
