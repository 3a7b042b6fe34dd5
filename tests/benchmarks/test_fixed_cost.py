"""The fixed cost of a build (issue 16): what pybuild pays on every build that BuildKit, whose
daemon is warm, does not. Run on demand:

    python3 -m pytest -q tests/benchmarks/test_fixed_cost.py -m benchmark -s -p no:cacheprovider

  (a) no-op rebuild: FROM a busybox base (testdata/images/busybox/make.py), COPY of a context of
      2,000 files / 55 MB, a RUN; nothing changed since the last build. pybuild writes
      `-o image.tar` (left alone when the image is the same) and tags into its store; BuildKit
      `DOCKER_BUILDKIT=1 docker build --network none -q -t NAME`.
  (b) one small RUN (`touch /x && rm -rf /usr/share/doc`) on the 151k-entry base of
      test_run_overhead.py, both tools with --no-cache, the base's snapshots already unpacked for
      pybuild and the base loaded into dockerd. pybuild streams its tarball to /dev/null (`-o -`),
      as BuildKit only updates its store; the same build into a tarball file (506 MB of base
      layers copied) is shown, not compared.

Goals, asserted as ratios of medians (of RUNS rounds, the tools taking turns) measured in this
run: (a) and (b) <= 1.0x BuildKit. Python's start-up (`python3 -c pass`, and the imports of a
no-op rebuild) is shown for the floor. CPU figures cover pybuild's process and children;
BuildKit's work happens in dockerd, so its rows have none. Everything made here (images, the
build cache records of these builds, the scratch directory) is removed at the end.
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.benchmarks import buildkit_records
from tests.benchmarks.test_run_overhead import BuildKit, Pybuild, make_base
from tests.benchmarks.workload import (Command, Table, installed_env, make_context, median_of,
                                       reported, require_busybox_and_docker, wall_only)
from tests.support import DOCKER, ROOT, docker

pytestmark = pytest.mark.benchmark

RUNS = 5
FILES = 2_000
TOTAL_BYTES = 55 << 20
BASE_ENTRIES = 151_000
SMALL_RUN = "touch /x && rm -rf /usr/share/doc"
BUSYBOX = "/bin/busybox"
BUSYBOX_RECIPE = ROOT / "testdata" / "images" / "busybox" / "make.py"
DOCKERFILE = "FROM {base}\nCOPY . /app\nRUN echo {token} > /app/marker\n"
_IMPORTS = ("import gc; gc.disable(); from builder.cli import dataclass_code; "
            "dataclass_code.install(); import builder.api")


@dataclass
class Bench:
    work: str
    env: dict[str, str]  # for pybuild: bytecode cached, as in an installed pybuild
    token: str
    table: Table
    images: set[str] = field(default_factory=set)  # Docker images built by (a)
    tags: list[str] = field(default_factory=list)
    records_before: set[str] = field(default_factory=set)
    sources: set[str] = field(default_factory=set)  # BuildKit's source.local records of ours
    run_buildkit: BuildKit | None = None  # (b)'s

    def tag(self, name: str) -> str:
        tag = f"pybuild-bench-{self.token}/{name}:1"
        self.tags.append(tag)
        return tag

    def cleanup(self) -> list[str]:
        present = set(docker("images", "-q", "--no-trunc").stdout.decode().split())
        if self.images & present:
            docker("rmi", "-f", *(self.images & present), check=False)
        docker("rmi", "-f", *self.tags, check=False)
        problems = self.run_buildkit.cleanup() if self.run_buildkit else []
        return problems + buildkit_records.remove_ours(
            self.records_before, lambda record: self.token in record["Description"],
            self.sources)


@pytest.fixture(scope="module")
def bench() -> Iterator[Bench]:
    require_busybox_and_docker(BUSYBOX)
    work = tempfile.mkdtemp(prefix="pybuild-bench-fixed-")
    token = uuid.uuid4().hex[:10]
    env = installed_env(work)
    state = Bench(work, env, token, Table(
        f"The fixed cost of a build, pybuild against BuildKit ({os.cpu_count()} CPUs, load "
        f"average {os.getloadavg()[0]:.2f}; medians of {RUNS})"),
        records_before=set(buildkit_records.records()))
    with reported(state.table, work, state.cleanup):
        yield state


def test_noop_rebuild(bench: Bench) -> None:
    base_tag = bench.tag("busybox")
    archive = os.path.join(bench.work, "busybox.tar")
    # An mtime of our own makes the base's layer (and every BuildKit record above it) ours.
    subprocess.run([sys.executable, str(BUSYBOX_RECIPE), archive, "--tag", base_tag,
                    "--mtime", str(random.randrange(10**8, 10**9))], check=True)
    context = make_context(os.path.join(bench.work, "context"), files=FILES,
                           total_bytes=TOTAL_BYTES)
    with open(os.path.join(context.root, "Dockerfile"), "w") as handle:
        handle.write(DOCKERFILE.format(base=base_tag, token=bench.token))
    out, cache = bench.tag("out"), os.path.join(bench.work, "cache")
    env = dict(bench.env, PYBUILD_CACHE_DIR=cache)
    output = os.path.join(bench.work, "image.tar")
    subprocess.run([sys.executable, "-m", "builder.cli", "load", "-q", "-i", archive],
                   cwd=str(ROOT), env=env, check=True)
    docker("load", "-q", "-i", archive, timeout=1800)
    iidfile = os.path.join(bench.work, "docker.iid")

    def noted() -> None:
        with open(iidfile) as handle:
            bench.images.add(handle.read().strip())
    pybuild = Command([sys.executable, "-m", "builder.cli", "-q", "--network", "none", "-t", out,
                       "-o", output, context.root], cwd=str(ROOT), env=env)
    buildkit = Command([DOCKER, "build", "--network", "none", "-q", "-t", out, "--iidfile",
                        iidfile, context.root], after=noted,
                       env=dict(os.environ, DOCKER_BUILDKIT="1"))
    pybuild.run()
    buildkit.run()  # both caches hold every step from here on
    new = {i: r for i, r in buildkit_records.records().items() if i not in bench.records_before}
    bench.sources |= {i for i, r in new.items() if r["CacheType"] == "source.local"}
    before = os.stat(output).st_mtime_ns
    ours, theirs = median_of(RUNS, pybuild, buildkit)
    assert os.stat(output).st_mtime_ns == before, "a no-op rebuild leaves the tarball alone"
    assert len(bench.images) == 1, "BuildKit's no-op rebuild keeps the image ID"
    python = median_of(RUNS, Command([sys.executable, "-c", "pass"], env=bench.env))[0]
    imports = median_of(RUNS, Command([sys.executable, "-c", _IMPORTS], cwd=str(ROOT),
                                      env=bench.env))[0]
    bench.table.add(f"(a) no-op rebuild ({context.files:,} files): BuildKit", wall_only(theirs))
    bench.table.add("(a) no-op rebuild: pybuild -o image.tar", ours,
                    versus=("BuildKit", wall_only(theirs)), at_most=1.0)
    bench.table.add("    python3 -c pass (start-up floor)", python)
    bench.table.add("    python3 -c: a build's imports, as the command line makes them", imports)
    bench.table.check()


def test_small_run_on_a_large_base(bench: Bench) -> None:
    base = make_base(os.path.join(bench.work, "base151k.tar"), "151k", BASE_ENTRIES,
                     bench.tag("base151k"))
    context = os.path.join(bench.work, "small-run")
    os.makedirs(context)
    with open(os.path.join(context, "Dockerfile"), "w") as handle:
        handle.write(f"FROM {base.tag}\nRUN {SMALL_RUN}\n")
    out = bench.tag("run-out")
    pybuild = Pybuild(bench.work, bench.env, base, "cache151k", out)
    pybuild.snapshot_dirs()  # unpacked once, as after the base's first use
    buildkit = bench.run_buildkit = BuildKit(bench.work, out)
    buildkit.load(base)
    buildkit.first_build(context, layers=3)
    discard, tarball = pybuild.build(context, discard=True), pybuild.build(context)
    discard.run()
    ours, theirs, into_file = median_of(RUNS, discard, buildkit.build(context), tarball)
    layers = pybuild.output_layers()
    assert len(layers) == 3 and "x" in layers[-1] and ".wh.doc" in "\n".join(layers[-1]), \
        f"pybuild's RUN layer: {layers[-1]}"
    what = f"(b) RUN {SMALL_RUN} on {base.entries:,} entries"
    bench.table.add(f"{what}: BuildKit --no-cache", wall_only(theirs))
    bench.table.add(f"{what}: pybuild --no-cache -o - (to /dev/null)", ours,
                    versus=("BuildKit", wall_only(theirs)), at_most=1.0)
    bench.table.add("    the same into a tarball file (the base's layers copied too)", into_file,
                    versus=("BuildKit", wall_only(theirs)))
    bench.table.check()
