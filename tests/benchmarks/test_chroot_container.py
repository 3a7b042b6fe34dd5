"""The 50-RUN case (case B of test_run_overhead.py, on its 15k-entry base) under `chroot` inside
an unprivileged job container with the cache on the container's overlayfs root (issue 15), side
by side with `namespaces` on the host. Run on demand:

    python3 -m pytest -q tests/benchmarks/test_chroot_container.py -m benchmark -s -p no:cacheprovider

The container is the job container of tests/test_isolation.py (Docker's defaults, no network),
started once; pybuild runs in it through `docker exec`, whose own cost (about 0.1 s) is in the
figure. Each side has the base loaded and unpacked by an untimed first build, then builds with
--no-cache, writing the tarball to /dev/null; the sides take turns, three rounds, and the
medians are compared. Goal: chroot within 2x of namespaces. The host's RUNs get no network
namespace (`--network host`), as chroot's cannot; the usual `--network none` row is shown too.
"""
from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from tests.benchmarks.test_run_overhead import SIZES, Pybuild, make_base
from tests.benchmarks.workload import Command, Table, Timing
from tests.support import DOCKER, ROOT, docker
from tests.test_isolation import JOB_ENVIRONMENT, runner  # noqa: F401  (a fixture)

pytestmark = pytest.mark.benchmark

RUNS = 3
STEPS = 50
GOAL = 2.0


def median_of(runs: int, commands: dict[str, Command]) -> dict[str, Timing]:
    """The median wall and CPU times of each command, the commands taking turns in each round."""
    seen: dict[str, list[Timing]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, command in commands.items():
            seen[name].append(command.run())
    return {name: Timing(statistics.median(t.wall for t in timings),
                         statistics.median(t.cpu for t in timings))
            for name, timings in seen.items()}


def test_fifty_runs_chroot_in_a_container_against_namespaces(images, runner):  # noqa: F811
    image, mounts = runner
    label, entries = SIZES[0]
    work = Path(tempfile.mkdtemp(prefix="pybuild-bench-chroot-"))
    try:
        token = uuid.uuid4().hex[:8]
        base = make_base(str(work / "base.tar"), label, entries, f"pybuild-bench-{token}/base:1")
        context = work / "context"
        context.mkdir()
        (context / "Dockerfile").write_text(f"FROM {base.tag}\n" + "".join(
            f"RUN echo {n} > /{n}\n" for n in range(1, STEPS + 1)))
        host = Pybuild(str(work), dict(os.environ), base, "cache", f"pybuild-bench-{token}/out:1")
        name = f"pybuild-bench-chroot-{token}"
        images.containers.append(name)
        docker("run", "-d", "--name", name, "--network", "none", *mounts, "-v", f"{work}:{work}",
               "-w", str(ROOT), *JOB_ENVIRONMENT, image, "sleep", "3600")
        cli = f"{os.path.realpath(sys.executable)} -m builder.cli"
        docker("exec", name, "sh", "-c", f"{cli} load -q -i {base.archive}")
        in_container = Command([DOCKER, "exec", name, "sh", "-c",
                                f"{cli} --no-cache --isolation chroot -t {host.tag} -o - {context}"
                                " > /dev/null"])
        commands = {
            "chroot, in a container": in_container,
            "namespaces --network host": host.build(str(context), "--isolation", "namespaces",
                                                    "--network", "host", discard=True),
            "namespaces --network none": host.build(str(context), "--isolation", "namespaces",
                                                    discard=True),
        }
        for command in commands.values():  # the bases unpacked, each side checked once
            command.run()
        times = median_of(RUNS, commands)
        # the work is done in the container, not by the `docker exec` client: no CPU figure
        times["chroot, in a container"] = Timing(times["chroot, in a container"].wall)
        table = Table(f"{STEPS} x RUN echo N > /N on the {label} base, median of {RUNS} "
                      f"(load average {' '.join(f'{v:.2f}' for v in os.getloadavg())})")
        reference = times["namespaces --network host"]
        table.add("namespaces --network host, on the host", reference)
        table.add("namespaces --network none, on the host", times["namespaces --network none"],
                  versus=("namespaces --network host", reference))
        table.add("chroot, in a container (cache on its overlayfs root)",
                  times["chroot, in a container"], versus=("namespaces", reference), at_most=GOAL)
        for what, timing in list(table.timings.items()):
            table.add(f"  {what.split(',')[0]}: per RUN", Timing(timing.wall / STEPS))
        print(table.render())
        table.check()
    finally:
        shutil.rmtree(work, ignore_errors=True)
