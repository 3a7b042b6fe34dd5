"""RUN under `chroot` inside an unprivileged job container with the cache on the container's
overlayfs root (issue 15), side by side with `namespaces` on the host: the 50-RUN case (case B of
test_run_overhead.py, on its 15k-entry base), and one RUN on its 150k-entry base (case A). Run on
demand:

    python3 -m pytest -q tests/benchmarks/test_chroot_container.py -m benchmark -s -p no:cacheprovider

The container is the job container of tests/test_isolation.py (Docker's defaults, no network),
started once; pybuild runs in it through `docker exec`, whose own cost (about 0.1 s) is in the
figure. Each side has the base loaded and unpacked by an untimed first build, then builds with
--no-cache, writing the tarball to /dev/null; the sides take turns, three rounds, and the
medians are compared. Goal: chroot within 2x of namespaces. The host's RUNs get no network
namespace (`--network host`), as chroot's cannot; the usual `--network none` row is shown too.

On the 150k base, the untimed first build in the container copies the image into a working root
(layers/rootpool.py), which later builds take back from the cache: the goal there is that a
build copies no image, i.e. takes at most half the time of that first one (its ratio to
namespaces is shown).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import uuid
from collections.abc import Iterator
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


class Sides:
    """The job container (pybuild in it through `docker exec`) and the host, with one base loaded
    into each's cache."""

    def __init__(self, work: Path, base, job: tuple[str, list[str]],
                 containers: list[str]) -> None:
        image, mounts = job
        token = uuid.uuid4().hex[:8]
        self.host = Pybuild(str(work), dict(os.environ), base, "cache",
                            f"pybuild-bench-{token}/out:1")
        self.name = f"pybuild-bench-chroot-{token}"
        containers.append(self.name)
        docker("run", "-d", "--name", self.name, "--network", "none", *mounts, "-v",
               f"{work}:{work}", "-w", str(ROOT), *JOB_ENVIRONMENT, image, "sleep", "3600")
        self.cli = f"{os.path.realpath(sys.executable)} -m builder.cli"
        docker("exec", self.name, "sh", "-c", f"{self.cli} load -q -i {base.archive}",
               timeout=1800)

    def chroot(self, context: Path) -> Command:
        return Command([DOCKER, "exec", self.name, "sh", "-c",
                        f"{self.cli} --no-cache --isolation chroot -t {self.host.tag} -o - "
                        f"{context} > /dev/null"])

    def namespaces(self, context: Path, *options: str) -> Command:
        return self.host.build(str(context), "--isolation", "namespaces", *options, discard=True)


@contextlib.contextmanager
def prepared(size: int, body: str, job: tuple[str, list[str]],
             containers: list[str]) -> Iterator[tuple[str, Sides, Path]]:
    """The base of SIZES[size] on both sides and a context of `FROM base` + `body`: (the base's
    label, the sides, the context)."""
    label, entries = SIZES[size]
    work = Path(tempfile.mkdtemp(prefix="pybuild-bench-chroot-"))
    try:
        base = make_base(str(work / "base.tar"), label, entries,
                         f"pybuild-bench-{uuid.uuid4().hex[:8]}/base:1")
        context = work / "context"
        context.mkdir()
        (context / "Dockerfile").write_text(f"FROM {base.tag}\n{body}")
        yield label, Sides(work, base, job, containers), context
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_fifty_runs_chroot_in_a_container_against_namespaces(images, runner):  # noqa: F811
    body = "".join(f"RUN echo {n} > /{n}\n" for n in range(1, STEPS + 1))
    with prepared(0, body, runner, images.containers) as (label, sides, context):
        commands = {
            "chroot, in a container": sides.chroot(context),
            "namespaces --network host": sides.namespaces(context, "--network", "host"),
            "namespaces --network none": sides.namespaces(context),
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


def test_one_run_on_the_large_base_copies_no_image(images, runner):  # noqa: F811
    body = "RUN touch /x && rm -rf /usr/share/doc\n"
    with prepared(1, body, runner, images.containers) as (label, sides, context):
        chroot, namespaces = sides.chroot(context), sides.namespaces(context, "--network", "host")
        first = chroot.run()  # unpacks the base, copies it into a working root
        namespaces.run()
        times = median_of(RUNS, {"chroot": chroot, "namespaces": namespaces})
        table = Table(f"RUN touch /x && rm -rf /usr/share/doc on the {label} base, median of "
                      f"{RUNS} (load average {' '.join(f'{v:.2f}' for v in os.getloadavg())})")
        table.add("namespaces --network host, on the host", times["namespaces"])
        table.add("chroot, in a container: first build (copies the image)", Timing(first.wall))
        table.add("chroot, in a container: later builds", Timing(times["chroot"].wall),
                  versus=("its first build", first), at_most=0.5)
        table.add("  the same, against namespaces", Timing(times["chroot"].wall),
                  versus=("namespaces", times["namespaces"]))
        print(table.render())
        table.check()
