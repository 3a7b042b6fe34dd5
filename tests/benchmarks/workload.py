"""What the benchmarks measure on and with: a generated build context, best-of-N timing of
commands, and the figures table they print.

The context imitates a real project: thousands of small files in nested directories, a few large
ones, about half of the bytes compressible text and half incompressible (random) data, so the
compressed figures are neither flattered by zeros nor punished by pure noise.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import pytest

from tests.support import docker_available

_WORDS = (b"the of and to in is for on with as def class return import self value name data "
          b"path file list dict none true false error test build layer image tar copy run from "
          b"config index entry size mode user group time write read open close").split()


@dataclass(frozen=True)
class Context:
    root: str
    files: int
    total_bytes: int


def make_context(root: str, *, files: int = 20_000, total_bytes: int = 500 << 20,
                 large_files: int = 40, seed: int = 2) -> Context:
    """Write a build context under `root`: `files` regular files (`large_files` of them sharing
    half of `total_bytes`) plus a Dockerfile `FROM scratch` / `COPY . /data`. Seeded, so every
    session measures the same tree."""
    rng = random.Random(seed)
    lines = [b" ".join(rng.choices(_WORDS, k=rng.randint(3, 14))) + b"\n" for _ in range(4096)]
    small = files - large_files
    small_sizes = [int(rng.lognormvariate(8.5, 1.2)) for _ in range(small)]
    scale = (total_bytes // 2) / sum(small_sizes)
    small_sizes = [max(0, int(size * scale)) for size in small_sizes]
    large_size = (total_bytes - sum(small_sizes)) // large_files
    directories = _directories(rng, root, count=max(1, small // 25))
    written = 0
    for number in range(files):
        if number < large_files:
            path, size = os.path.join(root, "assets", f"blob{number:03d}.bin"), large_size
        else:
            directory = rng.choice(directories)
            path = os.path.join(directory, f"f{number:05d}.{rng.choice(('py', 'txt', 'dat'))}")
            size = small_sizes[number - large_files]
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(_text(rng, lines, size) if number % 2 else rng.randbytes(size))
        written += size
    with open(os.path.join(root, "Dockerfile"), "w") as handle:
        handle.write("FROM scratch\nCOPY . /data\n")
    return Context(root, files + 1, written)


def _directories(rng: random.Random, root: str, count: int) -> list[str]:
    """`count` directory paths under `root/src`, each inside a recent one (mostly) or any earlier
    one, at most six levels down: a source tree's shape."""
    paths = [os.path.join(root, "src")]
    for number in range(count - 1):
        paths.append(os.path.join(rng.choice(paths[-50:] if rng.random() < 0.7 else paths),
                                  f"d{number:04d}"))
        if paths[-1].count(os.sep) - root.count(os.sep) > 6:
            paths[-1] = os.path.join(root, "src", f"d{number:04d}")
    return paths


def _text(rng: random.Random, lines: list[bytes], size: int) -> bytes:
    """About `size` bytes of source-like text, cut to exactly `size`."""
    out = bytearray()
    while len(out) < size:
        out += b"".join(rng.choices(lines, k=64))
    return bytes(out[:size])


def require_busybox_and_docker(busybox: str) -> None:
    """Skip a benchmark against BuildKit that has no busybox-static to make its base from, or no
    Docker engine."""
    if not os.path.exists(busybox):
        pytest.skip(f"{busybox} is missing (apt-get install busybox-static)")
    if not docker_available():
        pytest.skip("no Docker engine")


def installed_env(work: str) -> dict[str, str]:
    """The environment pybuild runs with in a benchmark: its bytecode cached (under `work`), as
    in an installed pybuild, whatever the caller's PYTHONDONTWRITEBYTECODE."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = os.path.join(work, "pycache")
    return env


def _nothing() -> None:
    pass


@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds, and the CPU seconds (user + system) of the command and its children:
    the CPU figure moves much less than the wall clock when other work shares the machine."""

    wall: float
    cpu: float | None = None


@dataclass(frozen=True)
class Command:
    """One timed command; `before` and `after` (untimed) reset state around each run. A `str`
    command runs through the shell (for pipelines)."""

    argv: Sequence[str] | str
    before: Callable[[], None] = _nothing
    after: Callable[[], None] = _nothing
    env: dict[str, str] | None = None
    cwd: str | None = None

    def run(self) -> Timing:
        """How long the command took. A failing command fails the benchmark."""
        self.before()
        used = _children_cpu()
        start = time.perf_counter()
        done = subprocess.run(self.argv, shell=isinstance(self.argv, str), env=self.env,
                              cwd=self.cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        timing = Timing(time.perf_counter() - start, _children_cpu() - used)
        if done.returncode != 0:
            raise AssertionError(f"{self.argv} failed: {done.stderr.decode(errors='replace')}")
        self.after()
        return timing


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def best_of(runs: int, *commands: Command) -> list[Timing]:
    """The best wall and CPU times of each command over `runs` rounds, the commands taking turns
    within a round, so a machine that slows down or speeds up (page cache, other load) touches
    all alike."""
    best = [Timing(float("inf"), float("inf")) for _ in commands]
    for _ in range(runs):
        for number, command in enumerate(commands):
            timing = command.run()
            best[number] = Timing(min(best[number].wall, timing.wall),
                                  min(best[number].cpu, timing.cpu))
    return best


def wall_only(timing: Timing) -> Timing:
    """BuildKit's work happens in dockerd, not in the timed client: its CPU figure would be the
    client's alone, so none is shown."""
    return Timing(timing.wall, None)


def median_of(runs: int, *commands: Command) -> list[Timing]:
    """The median wall and CPU times of each command over `runs` rounds, taking turns as in
    `best_of`: what a user sees, where `best_of` shows what the machine allows."""
    timings: list[list[Timing]] = [[] for _ in commands]
    for _ in range(runs):
        for number, command in enumerate(commands):
            timings[number].append(command.run())
    return [Timing(statistics.median(t.wall for t in found),
                   statistics.median(t.cpu for t in found) if found[0].cpu is not None else None)
            for found in timings]


@dataclass
class Table:
    """The figures, printed once at the end: what ran, its best wall time and its ratio to the
    reference it is compared with, its best CPU time (and ratio), and the goal. Goals that are
    ratios measured in the same run are checked (`check`); goals in absolute time are only
    shown, since they depend on the machine and its load."""

    title: str
    rows: list[tuple[str, str, str, str, str]] = field(default_factory=list)
    timings: dict[str, Timing] = field(default_factory=dict)
    missed: list[str] = field(default_factory=list)

    def reference(self, what: str) -> Timing | None:
        """The timing of an earlier row, to compare a later one with."""
        return self.timings.get(what)

    def add(self, what: str, timing: Timing, *, versus: tuple[str, Timing] | None = None,
            goal: str = "", at_most: float | None = None, at_least: float | None = None) -> None:
        """A row. `at_most` / `at_least`: the goal as bounds on the wall-time ratio to `versus`,
        both measured in this run (so the machine's speed and load cancel out); a row outside
        them is recorded for `check`, after it is in the table, which is printed either way."""
        self.timings[what] = timing
        ratio = cpu = ""
        if versus:
            measured = timing.wall / versus[1].wall
            ratio = f"{measured:.2f}x {versus[0]}"
            bounds = " and ".join(f"{sign} {bound:g}x" for sign, bound in
                                  (("<=", at_most), (">=", at_least)) if bound is not None)
            goal = goal or (f"{bounds} {versus[0]}" if bounds else "")
            if measured > (at_most or float("inf")) or measured < (at_least or 0):
                self.missed.append(f"{what}: {ratio}, goal {bounds} {versus[0]}")
        elif at_most is not None or at_least is not None:
            raise ValueError(f"{what}: a ratio goal needs a row to compare with")
        if timing.cpu is not None:
            cpu = _seconds(timing.cpu)
            if versus and versus[1].cpu:
                cpu += f" ({timing.cpu / versus[1].cpu:.2f}x)"
        self.rows.append((what, _seconds(timing.wall), ratio, cpu, goal))

    def check(self) -> None:
        """Fail on the ratio goals missed since the last check, naming each with its figure."""
        missed, self.missed = self.missed, []
        assert not missed, f"{self.title}: goals missed: " + "; ".join(missed)

    def render(self) -> str:
        header = ("", "wall", "ratio", "cpu", "goal")
        widths = [max(len(row[i]) for row in [header, *self.rows]) for i in range(4)]
        lines = ["", self.title]
        for row in [header, *self.rows]:
            lines.append("  ".join([row[0].ljust(widths[0]), row[1].rjust(widths[1]),
                                    row[2].ljust(widths[2]), row[3].ljust(widths[3]), row[4]]))
        return "\n".join(lines)


def _seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def layer_names(tarball: str) -> list[list[str]]:
    """The entry names of each layer of a docker-save tarball."""
    with tarfile.open(tarball) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))
        layers = []
        for name in manifest[0]["Layers"]:
            with tarfile.open(fileobj=outer.extractfile(name)) as inner:
                layers.append(inner.getnames())
    return layers


@contextlib.contextmanager
def reported(table: Table, work: str, cleanup: Callable[[], list[str]]) -> Iterator[None]:
    """Around a benchmark module's builds: afterwards, however they ended, `cleanup` (what it
    could not remove is printed), the table, the load average, and `work` removed."""
    try:
        yield
    finally:
        problems = cleanup()
        print(table.render())
        print(f"load average at the end: {os.getloadavg()[0]:.2f}")
        shutil.rmtree(work, ignore_errors=True)
        for problem in problems:
            print(f"cleanup: {problem}")
