"""What Docker's capabilities and seccomp profile cost a RUN (issue 12). Run on demand:

    python3 -m pytest -q tests/benchmarks/test_confinement.py -m benchmark -s -p no:cacheprovider

Per RUN: the median time a forked child takes to apply the confinement (bounding-set drops, the
prepared filter, capset), and each part alone, timed inside the child (a fork of the pytest
process itself costs more than all of it, and varies more). Goal: under 2 ms. Once per build: `prepare` (libseccomp compiles the profile, two throwaway children
try it). End to end: 50 RUNs on busybox with the profile and with `--security-opt
seccomp=unconfined`. Figures are printed, never asserted.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import pytest

from builder.sandbox.confine import prepare
from tests.benchmarks.workload import Command, Table, Timing, best_of
from tests.support import ROOT, busybox_base, pybuild

pytestmark = pytest.mark.benchmark

CHILDREN = 300
RUNS = 3
STEPS = 50


def _in_child(work) -> float:
    """The median seconds `work()` takes in a freshly forked child, as in a RUN's command."""
    read, write = os.pipe()
    for _ in range(CHILDREN):
        child = os.fork()
        if child == 0:
            start = time.perf_counter()
            work()
            os.write(write, f"{time.perf_counter() - start}\n".encode())
            os._exit(0)
        os.waitpid(child, 0)
    os.close(write)
    with os.fdopen(read) as reader:
        seconds = sorted(float(line) for line in reader)
    return seconds[len(seconds) // 2]


def test_confinement_cost() -> None:
    table = Table("Docker's capabilities and seccomp profile for RUN")
    start = time.perf_counter()
    confinement, warnings = prepare(seccomp=True)
    table.add("prepare, once per build", Timing(time.perf_counter() - start))
    assert not warnings and confinement.seccomp is not None
    for what, work in (("capabilities: bounding set", confinement.capabilities.bound),
                       ("capabilities: capset", confinement.capabilities.restrict),
                       (f"seccomp: install {confinement.seccomp.instructions} BPF instructions",
                        confinement.seccomp.install),
                       ("all of it, per RUN", confinement.apply)):
        seconds = _in_child(work)
        table.add(f"{what}: {seconds * 1e6:.0f} µs", Timing(seconds),
                  goal="< 2 ms" if what.startswith("all") else "")
    with tempfile.TemporaryDirectory() as work:
        base = busybox_base(Path(work))
        context = os.path.join(work, "context")
        os.mkdir(context)
        with open(os.path.join(context, "Dockerfile"), "w") as file:
            file.write("FROM busybox:test\n" + "".join(f"RUN echo {n} > /{n}\n"
                                                       for n in range(STEPS)))
        env = dict(os.environ, PYBUILD_CACHE_DIR=os.path.join(work, "cache"),
                   PYTHONPATH=str(ROOT))
        assert pybuild("load", "-i", str(base), env=env).returncode == 0
        common = [sys.executable, "-m", "builder.cli", "--no-cache", "--network", "none",
                  "-o", os.path.join(work, "out.tar")]
        with_profile, unconfined = best_of(
            RUNS, Command(common + [context], env=env, cwd=str(ROOT)),
            Command(common + ["--security-opt", "seccomp=unconfined", context], env=env,
                    cwd=str(ROOT)))
        table.add(f"{STEPS} RUNs, seccomp=unconfined", unconfined)
        table.add(f"{STEPS} RUNs, Docker's profile", with_profile,
                  versus=("unconfined", unconfined))
        table.add("difference per RUN", Timing((with_profile.wall - unconfined.wall) / STEPS),
                  goal="< 2 ms")
    print(table.render())
