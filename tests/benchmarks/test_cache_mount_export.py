"""Cache mounts that survive an ephemeral CI runner (issue 14): `--cache-to ...,mounts=true`
against the same cache export without mounts, in one run:

    python3 -m pytest -q tests/benchmarks/test_cache_mount_export.py -m benchmark -s -p no:cacheprovider

The project is a `requirements.txt` and a "package mirror" in the context; its Dockerfile
installs the listed packages with a cache mount, as pip or apt does:

    RUN --mount=type=bind,source=mirror,target=/mirror \\
        --mount=type=cache,id=pkgs,target=/var/cache/pkgs \\
        for each listed package: fetch it into the cache unless it is there; install from there

The fetch has a deliberate cost and no sleep: six `gzip -9 | gzip -d` round trips of the
package (about 0.1 s of CPU here, a slow mirror's latency and bandwidth), then a copy. Each runner starts with an empty cache root (the
base image loaded, untimed), imports the previous run's export and exports again, as a CI job
would. The previous run built requirements v1 (39 packages); the timed run builds v2 (one
package added), so the install step runs:

  mounts:    --cache-to type=local,dest=D,mounts=true: the mount is restored before the step
             runs, one package is fetched, the changed mount is exported again
  no mounts: --cache-to type=local,dest=D: the cache mount is empty, every package is fetched

Both times (best of 2) and the bytes moved (blobs written to the export, and blobs fetched from
it) are printed; asserted: the mounts run installs from a restored cache (it fetched one
package) and is faster than the run without mount export.
"""
from __future__ import annotations

import base64
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from builder.units import human_size
from tests.benchmarks.workload import Command, Table, best_of
from tests.support import ROOT

pytestmark = pytest.mark.benchmark
BUSYBOX_RECIPE = ROOT / "testdata" / "images" / "busybox" / "make.py"
PACKAGES = 40
PACKAGE_BYTES = 200_000
DOCKERFILE = """\
FROM busybox:test
COPY requirements.txt /requirements.txt
RUN --mount=type=bind,source=mirror,target=/mirror \\
    --mount=type=cache,id=pkgs,target=/var/cache/pkgs \\
    for p in $(cat /requirements.txt); do \\
      [ -f /var/cache/pkgs/$p ] || { echo "fetch $p"; \\
        for round in 1 2 3 4 5 6; do gzip -9 -c /mirror/$p | gzip -dc > /dev/null; done; \\
        cp /mirror/$p /var/cache/pkgs/$p.part && mv /var/cache/pkgs/$p.part /var/cache/pkgs/$p; \\
      }; \\
    done && cd /var/cache/pkgs && cat $(cat /requirements.txt) | sha256sum > /installed
COPY app.py /app.py
"""


@dataclass
class Bench:
    work: str
    base: str
    context: str
    env: dict[str, str]
    table: Table

    def runner(self, name: str, export: str, mounts: bool) -> Command:
        """An ephemeral runner's build: its cache root made empty (the base loaded) and the
        export put back as the previous run left it, untimed; then the build."""
        cache = os.path.join(self.work, name)
        seeded = export + ".seeded"

        def before() -> None:
            shutil.rmtree(cache, ignore_errors=True)
            self.load(cache)
            shutil.rmtree(export, ignore_errors=True)
            shutil.copytree(seeded, export)
        to = f"type=local,dest={export}" + (",mounts=true" if mounts else "")
        return Command([sys.executable, "-m", "builder.cli", "--progress", "plain", "--network",
                        "none", "-o", os.devnull, "--cache-from", f"type=local,src={export}",
                        "--cache-to", to, self.context], before=before, cwd=str(ROOT),
                       env=dict(self.env, PYBUILD_CACHE_DIR=cache))

    def load(self, cache: str) -> None:
        subprocess.run([sys.executable, "-m", "builder.cli", "load", "-q", "-i", self.base],
                       cwd=str(ROOT), check=True, env=dict(self.env, PYBUILD_CACHE_DIR=cache))

    def seed(self, export: str, mounts: bool) -> None:
        """The previous run: requirements v1 built on an empty runner and exported."""
        cache = os.path.join(self.work, "seed-" + os.path.basename(export))
        self.load(cache)
        self.requirements(PACKAGES - 1)
        to = f"type=local,dest={export}" + (",mounts=true" if mounts else "")
        done = subprocess.run([sys.executable, "-m", "builder.cli", "--network", "none", "-o",
                               os.devnull, "--cache-to", to, self.context], cwd=str(ROOT),
                              env=dict(self.env, PYBUILD_CACHE_DIR=cache), capture_output=True)
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        shutil.copytree(export, export + ".seeded")
        shutil.rmtree(cache)

    def requirements(self, count: int) -> None:
        with open(os.path.join(self.context, "requirements.txt"), "w") as handle:
            handle.write("".join(f"pkg{i:02d}.whl\n" for i in range(count)))


@pytest.fixture(scope="module")
def bench() -> Iterator[Bench]:
    work = tempfile.mkdtemp(prefix="pybuild-bench-mounts-")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = os.path.join(work, "pycache")
    table = Table(f"Cache mounts across ephemeral runners ({os.cpu_count()} CPUs, load average "
                  f"{os.getloadavg()[0]:.2f}): {PACKAGES} packages of "
                  f"{PACKAGE_BYTES * 4 / 3 / 1e6:.1f} MB, one added")
    try:
        base = os.path.join(work, "busybox.tar")
        subprocess.run([sys.executable, str(BUSYBOX_RECIPE), base, "--tag", "busybox:test"],
                       check=True)
        context = os.path.join(work, "context")
        mirror = os.path.join(context, "mirror")
        os.makedirs(mirror)
        rng = random.Random(14)
        for number in range(PACKAGES):
            with open(os.path.join(mirror, f"pkg{number:02d}.whl"), "wb") as handle:
                # base64-like text: a package compresses somewhat, as wheels and .debs do
                handle.write(base64.b64encode(rng.randbytes(PACKAGE_BYTES)))
        with open(os.path.join(context, "Dockerfile"), "w") as handle:
            handle.write(DOCKERFILE)
        with open(os.path.join(context, "app.py"), "w") as handle:
            handle.write("print('app')\n")
        yield Bench(work, base, context, env, table)
    finally:
        print(table.render())
        shutil.rmtree(work, ignore_errors=True)


def _tree_bytes(path: str) -> dict[str, int]:
    return {name: os.path.getsize(os.path.join(path, "blobs", "sha256", name))
            for name in os.listdir(os.path.join(path, "blobs", "sha256"))}


def _fetched(cache: str, export: str) -> int:
    """Bytes of the blobs a runner fetched from `export` (its blob store records each as a
    compressed variant found there)."""
    total = 0
    for directory, _, names in os.walk(os.path.join(cache, "compressed")):
        for name in names:
            with open(os.path.join(directory, name)) as handle:
                variant = json.load(handle)
            if variant["source"] == export:
                total += variant["size"]
    return total


def test_mount_export_speeds_up_an_ephemeral_runner(bench: Bench) -> None:
    exports = {mounts: os.path.join(bench.work, "export-" + ("mounts" if mounts else "plain"))
               for mounts in (True, False)}
    for mounts, export in exports.items():
        bench.seed(export, mounts)
    bench.requirements(PACKAGES)  # the source change: one package more
    runners = {mounts: bench.runner("runner-" + ("mounts" if mounts else "plain"), export, mounts)
               for mounts, export in exports.items()}
    with_mounts, without = best_of(2, runners[True], runners[False])

    moved = {}
    for mounts, export in exports.items():
        runners[mounts].run()  # once more, to read what it moved
        cache = runners[mounts].env["PYBUILD_CACHE_DIR"]
        before, after = _tree_bytes(export + ".seeded"), _tree_bytes(export)
        written = sum(size for name, size in after.items() if name not in before)
        moved[mounts] = (written, _fetched(cache, export))
    shown = {mounts: f"(sent {human_size(up)}, fetched {human_size(down)})"
             for mounts, (up, down) in moved.items()}
    bench.table.add(f"no mounts {shown[False]}", without)
    bench.table.add(f"mounts=true {shown[True]}", with_mounts,
                    versus=("no mounts", without), at_most=0.9)

    log = _log_of(runners[True])
    assert log.count("fetch pkg") == 1, log  # only the added package: the rest was restored
    assert "importing cache mount pkgs" in log
    assert moved[True][1] > moved[False][1]  # the mount came down
    bench.table.check()


def _log_of(command: Command) -> str:
    command.before()
    done = subprocess.run(command.argv, env=command.env, cwd=command.cwd, capture_output=True)
    assert done.returncode == 0
    return done.stderr.decode(errors="replace")
