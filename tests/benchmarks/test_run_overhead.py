"""RUN overhead (issue 3): pybuild against BuildKit and buildah, on a 15,000- and a 150,000-entry
base image made offline, and against the sandbox floor. Run on demand:

    python3 -m pytest -q tests/benchmarks/test_run_overhead.py -m benchmark -s -p no:cacheprovider

Case A: `FROM base` + `RUN touch /x && rm -rf /usr/share/doc`, built cold on both bases: every
tool with --no-cache (no step cache consulted; pybuild's still records each step). pybuild's base
snapshots are unpacked once per base and cache root: the first build (which unpacks them) is shown
on its own row, every other pybuild build runs on a cache root where they already are. Goal:
pybuild(150k) <= 1.2x pybuild(15k), i.e. a RUN costs nothing for the size of the image below it.
The tarball pybuild writes holds the base's layers, so its copy grows with the base; the same
build written to /dev/null (`-o -`) shows the cost without it.

Case B: 10, 25 and 50 consecutive `RUN echo N > /N` on the 15k base: total and per-RUN time. Goal:
pybuild faster than BuildKit (about 0.1 s per RUN here).

Then the floor a RUN cannot go below on this machine (unshare + chroot, and the same with an
overlay mount), Python's start-up, and where pybuild's per-RUN time goes (cProfile of one build).

The peers, side by side with pybuild in this one session, on the same tarballs:
  BuildKit  `DOCKER_BUILDKIT=1 docker build --network none --no-cache` (Docker 20.10's engine;
            the base loaded with `docker load -i`)
  buildah   `buildah bud --isolation chroot --layers --no-cache --pull-never` with the overlay
            storage driver in a private storage root (--root/--runroot in the scratch directory,
            so nothing of anyone else's is touched); the base pulled from `docker-archive:`.
            Chroot isolation cannot take `--network none`, so buildah's RUNs share the host's
            network; pybuild's and BuildKit's get a network namespace of their own.

Figures are printed; what is asserted is that every build made the layers it should, and the
goals of cases A and B, ratios measured in the same run (absolute times depend on the machine
and its load, so the floor's and start-up's goals are only shown). Each row has the best wall
time and the best CPU time (user + system of the timed process and its children), which moves
much less when other work shares the machine; BuildKit's work happens in dockerd, so it has no CPU figure.
Everything made here (images, build cache records of these builds, buildah's storage, the scratch
directory) is removed at the end.
"""
from __future__ import annotations

import importlib.util
import io
import math
import os
import pstats
import random
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest

from layers.archive import ArchiveImage, write_archive
from layers.layerblob import stored_blob
from layers.blobstore import BlobStore
from layers.compression import Compression
from layers.image import ContainerConfig, History, ImageConfig
from layers.reference import parse_reference
from layers.snapshots import SnapshotStore
from layers.tarwriter import Entry, Kind, LayerWriter
from tests.benchmarks import buildkit_records
from tests.benchmarks.workload import (Command, Table, Timing, best_of, installed_env,
                                       layer_names, wall_only)
from tests.support import DOCKER, ROOT, docker_available

pytestmark = pytest.mark.benchmark

RUNS = 3
# The first build on a cache root unpacks the base: a minute for the large one, and a one-time
# cost, so one run of it. The floors are cheap and noisy, so more runs of them.
UNPACK_RUNS = 1
FLOOR_RUNS = 5
SIZES = (("15k", 15_000), ("150k", 150_000))
# /usr/share/doc holds the same files in both bases, so `rm -rf /usr/share/doc` does the same work
# on each: only /usr/lib grows, and with it nothing a RUN should have to pay for.
DOC_FILES = 3_000
FILES_PER_DIR = 40
CASE_A = "touch /x && rm -rf /usr/share/doc"
CASE_B_STEPS = (10, 25, 50)
FLOOR_LOOPS = 100
BUSYBOX = "/bin/busybox"
BUSYBOX_RECIPE = ROOT / "testdata" / "images" / "busybox" / "make.py"
BUILDAH = shutil.which("buildah")
# What BuildKit names the records of our RUNs in its build cache: only these are removed after.
_OUR_RUNS = re.compile(r"exec /bin/sh -c (touch /x && rm -rf /usr/share/doc|echo \d+ > /\d+)$")


# -- the base images ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Base:
    """A generated base image: its docker-save tarball, tag, layers and entry count."""

    label: str
    archive: str
    tag: str
    diff_ids: tuple[str, ...]
    entries: int


def _busybox_recipe():
    spec = importlib.util.spec_from_file_location("busybox_make", BUSYBOX_RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_base(archive: str, label: str, entries: int, tag: str, *, seed: int = 3) -> Base:
    """Write a docker-save tarball (pybuild's own archive writer, which is also an OCI layout)
    of about `entries` entries in two layers: the busybox root of testdata/images/busybox/make.py,
    and small files (0 to 2 KiB, FILES_PER_DIR to a directory) under /usr/share/doc (DOC_FILES of
    them) and /usr/lib (the rest), as a distribution's base image holds. Seeded: every session
    measures the same image."""
    recipe = _busybox_recipe()
    with open(BUSYBOX, "rb") as handle:
        busybox = handle.read()
    architecture, static = recipe.elf_info(busybox)
    if not static:
        pytest.skip(f"{BUSYBOX} is not statically linked (apt-get install busybox-static)")
    root_layer = recipe.make_layer(busybox, recipe.applet_paths(BUSYBOX), 0)
    with tarfile.open(fileobj=io.BytesIO(root_layer)) as tar:
        root_entries = len(tar.getnames())
    scratch = tempfile.mkdtemp(prefix=".blobs-", dir=os.path.dirname(archive))
    blobs = BlobStore(scratch)
    root_id = blobs.put_bytes(root_layer)
    bulk_id, bulk_entries = _bulk_layer(blobs, entries - root_entries, seed)
    created = "1970-01-01T00:00:00Z"
    config = ImageConfig(
        config=ContainerConfig(env=(f"PATH={recipe.PATH}",), cmd=("sh",)),
        diff_ids=(root_id, bulk_id), architecture=architecture, created=created,
        history=(History("busybox root (testdata/images/busybox/make.py)", created),
                 History(f"{entries:,} entries under /usr/share/doc and /usr/lib", created))
    ).to_bytes()
    layers = tuple(stored_blob(blobs.path(d), d, Compression.NONE.media_type)
                   for d in (root_id, bulk_id))
    with open(archive, "wb") as out:
        write_archive(out, ArchiveImage(config, layers, (parse_reference(tag),)))
    shutil.rmtree(scratch)
    return Base(label, archive, tag, (root_id, bulk_id), root_entries + bulk_entries)


def _bulk_layer(blobs: BlobStore, entries: int, seed: int) -> tuple[str, int]:
    """The second layer, of `entries` entries (directories included); (diff ID, entries)."""
    rng = random.Random(seed)
    noise = rng.randbytes(1 << 16)
    paths = [("usr", True), ("usr/lib", True), ("usr/share", True), ("usr/share/doc", True)]
    for top, files in (("usr/share/doc", DOC_FILES), ("usr/lib", None)):
        number = 0
        while (number < files) if files is not None else (len(paths) < entries):
            directory = f"{top}/pkg{number // FILES_PER_DIR:05d}"
            if number % FILES_PER_DIR == 0:
                paths.append((directory, True))
            paths.append((f"{directory}/f{number % FILES_PER_DIR:02d}", False))
            number += 1
    paths.sort(key=lambda item: item[0].split("/"))
    with blobs.temp() as (handle, temp_path):
        writer = LayerWriter(handle)
        for path, is_dir in paths:
            if is_dir:
                writer.add(Entry(path, Kind.DIR, 0o755))
                continue
            size = rng.randrange(2048)
            start = rng.randrange(len(noise) - size)
            writer.add(Entry(path, Kind.FILE, 0o644, size=size), noise[start:start + size])
        digest = writer.finish()
    blobs.commit(temp_path, digest.diff_id)
    return digest.diff_id, len(paths)


# -- the tools ------------------------------------------------------------------------------------

def _run(*argv: str, env: dict[str, str] | None = None, check: bool = True) -> str:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1800)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout


def _remove(*paths: str) -> None:
    for path in paths:
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.unlink(path)


class Pybuild:
    """pybuild on one cache root (`PYBUILD_CACHE_DIR`), with one base loaded into it."""

    def __init__(self, work: str, env: dict[str, str], base: Base, name: str, tag: str) -> None:
        self.tag = tag
        self.cache = os.path.join(work, name)
        self.env = dict(env, PYBUILD_CACHE_DIR=self.cache)
        self.base = base
        self.output = os.path.join(work, f"{name}.tar")
        self.load_time = Command([sys.executable, "-m", "builder.cli", "load", "-q", "-i",
                                  base.archive], cwd=str(ROOT), env=self.env).run()

    def build(self, context: str, *options: str, unpack: bool = False,
              discard: bool = False) -> Command:
        """A build into `self.output` (with `discard`, to stdout, which is /dev/null: the build
        without the copy of the layers into the tarball); with `unpack`, on a cache root without
        snapshots (as the first build after a `pybuild load` as a user), else with the base's
        snapshots already unpacked. Earlier snapshots are moved aside, not deleted: on ext4
        without a journal, creating inodes right after deleting as many costs several times more,
        which is not the unpack's cost."""
        def before() -> None:
            _remove(self.output)
            if unpack:
                snapshots = os.path.join(self.cache, "snapshots")
                if os.path.exists(snapshots):
                    os.replace(snapshots, f"{self.cache}.snapshots-{uuid.uuid4().hex[:8]}")
        return Command([sys.executable, "-m", "builder.cli", "--no-cache", "-t", self.tag,
                        "-o", "-" if discard else self.output, "--network", "none", *options,
                        context],
                       before=before, cwd=str(ROOT), env=self.env)

    def output_layers(self) -> list[list[str]]:
        """The entry names of each layer of the tarball the last build wrote."""
        return layer_names(self.output)

    def snapshot_dirs(self) -> list[str]:
        """The base's snapshot directories, lowest first, unpacked if they are not yet."""
        return SnapshotStore(self.cache).ensure(
            self.base.diff_ids, BlobStore(self.cache).path)


class BuildKit:
    """Docker 20.10's BuildKit; only the images and build cache records made here are removed."""

    def __init__(self, work: str, tag: str) -> None:
        self.work = work
        self.env = dict(os.environ, DOCKER_BUILDKIT="1")
        self.tag = tag
        self.tags: list[str] = [tag]
        self.built: set[str] = set()
        self.records_before = set(buildkit_records.records())
        self.sources: set[str] = set()  # source.local records of our contexts
        self.contexts_seen: set[str] = set()

    def load(self, base: Base) -> Timing:
        self.tags.append(base.tag)
        return wall_only(Command([DOCKER, "load", "-i", base.archive]).run())

    def build(self, context: str) -> Command:
        iidfile = os.path.join(self.work, "docker.iid")

        def after() -> None:
            with open(iidfile) as handle:
                image = handle.read().strip()
            self.built.add(image)
            _run(DOCKER, "rmi", "-f", image)
        return Command([DOCKER, "build", "--network", "none", "--no-cache", "-q",
                        "-t", self.tag, "--iidfile", iidfile, context],
                       before=lambda: _remove(iidfile), after=after, env=self.env)

    def first_build(self, context: str, layers: int) -> None:
        """An untimed build that checks the image, and notes the source records BuildKit keeps
        for a new context directory (the two, dockerfile and context, created during it)."""
        before = set(buildkit_records.records()) if context not in self.contexts_seen else None
        iidfile = os.path.join(self.work, "docker-check.iid")
        _run(DOCKER, "build", "--network", "none", "--no-cache", "-q", "--iidfile", iidfile,
             context, env=self.env)
        with open(iidfile) as handle:
            image = handle.read().strip()
        self.built.add(image)
        try:
            found = _run(DOCKER, "image", "inspect", "-f", "{{len .RootFS.Layers}}", image)
            assert int(found) == layers, f"BuildKit made {found.strip()} layers, not {layers}"
        finally:
            _run(DOCKER, "rmi", "-f", image, check=False)
        if before is not None:
            self.contexts_seen.add(context)
            new = {i: r for i, r in buildkit_records.records().items()
                   if i not in before and r["CacheType"] == "source.local"}
            if len(new) <= 2:  # more: someone else built meanwhile; theirs and ours are alike
                self.sources.update(new)

    def cleanup(self) -> list[str]:
        """Remove our images, then our build cache records: those of our RUNs (by their
        command), the base layers' records only they hung from, and our contexts' sources."""
        present = set(_run(DOCKER, "images", "-q", "--no-trunc").split())
        if self.built & present:
            _run(DOCKER, "rmi", "-f", *(self.built & present), check=False)
        _run(DOCKER, "rmi", "-f", *self.tags, check=False)
        return buildkit_records.remove_ours(
            self.records_before, lambda record: bool(_OUR_RUNS.search(record["Description"])),
            self.sources)


class Buildah:
    """buildah with its own storage root in the scratch directory: all of it is ours."""

    def __init__(self, work: str, tag: str) -> None:
        self.tag = tag
        self.root = os.path.join(work, "buildah")
        self.prefix = [BUILDAH, "--root", os.path.join(self.root, "storage"),
                       "--runroot", os.path.join(self.root, "run"), "--storage-driver", "overlay"]

    def load(self, base: Base) -> Timing:
        return Command([*self.prefix, "pull", "-q", f"docker-archive:{base.archive}"]).run()

    def build(self, context: str) -> Command:
        iidfile = os.path.join(self.root, "iid")

        def after() -> None:
            with open(iidfile) as handle:
                _run(*self.prefix, "rmi", "-f", handle.read().strip())
            _run(*self.prefix, "rmi", "--prune")  # the intermediate images of --layers
        return Command([*self.prefix, "bud", "--isolation", "chroot", "--layers", "--no-cache",
                        "--pull-never", "-q", "-t", self.tag, "--iidfile", iidfile,
                        "-f", os.path.join(context, "Dockerfile"), context],
                       before=lambda: _remove(iidfile), after=after)

    def check(self, context: str, layers: int) -> None:
        replace(self.build(context), after=lambda: None).run()
        with open(os.path.join(self.root, "iid")) as handle:
            image = handle.read().strip()
        found = _run(*self.prefix, "inspect", "--type", "image", "--format",
                     "{{len .OCIv1.RootFS.DiffIDs}}", image)
        _run(*self.prefix, "rmi", "-f", image)
        _run(*self.prefix, "rmi", "--prune")
        assert int(found) == layers, f"buildah made {found.strip()} layers, not {layers}"

    def cleanup(self) -> list[str]:
        _run(*self.prefix, "rmi", "-a", "-f", check=False)  # our private storage root only
        problems = []
        for mount in reversed(_mounts_under(self.root)):
            if subprocess.run(["umount", mount], capture_output=True).returncode != 0:
                problems.append(f"cannot unmount {mount}")
        return problems


def _mounts_under(directory: str) -> list[str]:
    with open("/proc/self/mountinfo") as handle:
        points = [line.split()[4] for line in handle]
    return [p for p in points if p == directory or p.startswith(directory.rstrip("/") + "/")]


# -- fixtures -------------------------------------------------------------------------------------

@dataclass
class Session:
    work: str
    env: dict[str, str]
    bases: dict[str, Base]
    pybuild: dict[str, Pybuild]
    buildkit: BuildKit | None
    buildah: Buildah | None
    tables: list[Table]
    contexts: dict[str, str]

    def context(self, name: str, base: Base, runs: list[str]) -> str:
        """A context directory holding only a Dockerfile: FROM base and the RUN lines."""
        if name not in self.contexts:
            directory = os.path.join(self.work, "contexts", name)
            os.makedirs(directory)
            with open(os.path.join(directory, "Dockerfile"), "w") as handle:
                handle.write(f"FROM {base.tag}\n" + "".join(f"RUN {run}\n" for run in runs))
            self.contexts[name] = directory
        return self.contexts[name]


@pytest.fixture(scope="module")
def session() -> Iterator[Session]:
    """The bases, loaded into pybuild (a cache root per base), Docker and buildah; everything is
    removed afterwards and the figures printed."""
    if not os.path.exists(BUSYBOX):
        pytest.skip(f"{BUSYBOX} is missing (apt-get install busybox-static)")
    work = tempfile.mkdtemp(prefix="pybuild-bench-run-")
    env = installed_env(work)
    token = uuid.uuid4().hex[:8]
    state = Session(work, env, {}, {}, None, None, [], {})
    problems: list[str] = []
    loads = Table(f"Loading the bases (one run each); load average {_load()}")
    try:
        for label, entries in SIZES:
            state.bases[label] = make_base(os.path.join(work, f"base{label}.tar"), label, entries,
                                           f"pybuild-bench-{token}/base{label}:1")
        out = f"pybuild-bench-{token}/out:1"
        state.buildkit = BuildKit(work, out) if docker_available() else None
        state.buildah = Buildah(work, out) if BUILDAH else None
        for label, base in state.bases.items():
            size = os.path.getsize(base.archive) / 1e6
            pybuild = state.pybuild[label] = Pybuild(work, env, base, f"cache{label}", out)
            loads.add(f"pybuild load [{label}: {base.entries:,} entries, {size:.0f} MB]",
                      pybuild.load_time)
            if state.buildkit:
                loads.add(f"docker load [{label}]", state.buildkit.load(base))
            if state.buildah:
                loads.add(f"buildah pull docker-archive: [{label}]", state.buildah.load(base))
        state.tables.append(loads)
        yield state
    finally:
        if state.buildkit:
            problems += state.buildkit.cleanup()
        if state.buildah:
            problems += state.buildah.cleanup()
        if not _mounts_under(work):
            shutil.rmtree(work, ignore_errors=True)
        else:
            problems.append(f"{work} left in place: mounts remain under it")
        for table in state.tables:
            print(table.render())
        print(f"\nload average at the end: {_load()}")
        for problem in problems:
            print(f"cleanup: {problem}")


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


NOT_MEASURED = Timing(math.nan, None)


def _per(timing: Timing, count: float) -> Timing:
    return Timing(timing.wall / count, None if timing.cpu is None else timing.cpu / count)


def _between(smaller: Timing, larger: Timing, count: int) -> Timing:
    """What each of `count` more RUNs added, from two builds that differ only by them."""
    cpu = None if smaller.cpu is None or larger.cpu is None else (larger.cpu - smaller.cpu) / count
    return Timing((larger.wall - smaller.wall) / count, cpu)


def _missing(session: Session) -> list[str]:
    return [name for name, tool in (("Docker", session.buildkit), ("buildah", session.buildah))
            if tool is None]


# -- case A ---------------------------------------------------------------------------------------

def test_case_a_one_run_on_a_large_base(session: Session) -> None:
    table = Table(f"Case A: FROM base + RUN {CASE_A}, cold, best of {RUNS} "
                  f"({os.cpu_count()} CPUs, load average {_load()})")
    session.tables.append(table)
    warm: list[tuple[str, Command]] = []
    unpacking: list[tuple[str, Command]] = []
    floors: dict[str, Timing] = {}
    for label, base in session.bases.items():
        pybuild = session.pybuild[label]
        context = session.context(f"a{label}", base, [CASE_A])
        first = pybuild.build(context, unpack=True)
        first.run()  # unpacks the snapshots the warm builds find
        layers = pybuild.output_layers()
        assert len(layers) == len(base.diff_ids) + 1
        assert {"x", "usr/share/.wh.doc"} <= set(layers[-1]), layers[-1]
        unpacking.append((label, first))
        warm.append((f"pybuild [{label}]", pybuild.build(context)))
        warm.append((f"pybuild -o - [{label}]", pybuild.build(context, discard=True)))
        if session.buildkit:
            session.buildkit.first_build(context, len(base.diff_ids) + 1)
            warm.append((f"BuildKit [{label}]", session.buildkit.build(context)))
        if session.buildah:
            session.buildah.check(context, len(base.diff_ids) + 1)
            warm.append((f"buildah [{label}]", session.buildah.build(context)))
        floors[label] = _overlay_floor(session.work, pybuild.snapshot_dirs(), CASE_A, 1)
    _settle()
    times = _best(RUNS, warm)
    # The unpacking builds last: the writeback of what they unpack must not slow the others.
    unpacked = _best(UNPACK_RUNS, unpacking)
    small = SIZES[0][0]
    for label, base in session.bases.items():
        mine = times[f"pybuild [{label}]"]
        table.add(f"floor: overlay + unshare + chroot sh -c '...' [{label}]", floors[label])
        table.add(f"pybuild, first build: unpacks the base [{label}]", unpacked[label],
                  versus=(f"pybuild {label}", mine),
                  goal=f"once per base and cache root; {UNPACK_RUNS} run")
        if label == small:
            table.add(f"pybuild [{label}]", mine, versus=("floor", floors[label]))
        else:
            table.add(f"pybuild [{label}]", mine,
                      versus=(f"pybuild {small}", times[f"pybuild [{small}]"]),
                      goal=f"<= 1.2x; {mine.wall / floors[label].wall:.2f}x floor", at_most=1.2)
        discarded = times[f"pybuild -o - [{label}]"]
        if label == small:
            table.add(f"pybuild -o - >/dev/null [{label}]", discarded,
                      versus=("floor", floors[label]),
                      goal="the build without copying the layers into a tarball")
        else:
            table.add(f"pybuild -o - >/dev/null [{label}]", discarded,
                      versus=(f"pybuild -o - {small}", times[f"pybuild -o - [{small}]"]),
                      goal=f"<= 1.2x; {discarded.wall / floors[label].wall:.2f}x floor",
                      at_most=1.2)
        for peer in ("BuildKit", "buildah"):
            if f"{peer} [{label}]" in times:
                table.add(f"{peer} [{label}]", times[f"{peer} [{label}]"],
                          versus=("pybuild", mine))
    for name in _missing(session):
        table.add(f"{name}: not available here", NOT_MEASURED)
    table.check()


def _best(runs: int, commands: list[tuple[str, Command]]) -> dict[str, Timing]:
    """best_of for named commands, the commands taking turns within each round."""
    timings = best_of(runs, *(command for _, command in commands))
    return {name: wall_only(timing) if name.startswith("BuildKit") else timing
            for (name, _), timing in zip(commands, timings)}


def _settle() -> None:
    """Write back what set-up left dirty, so no timed build pays for it."""
    os.sync()


def _overlay_floor(work: str, lowerdirs: list[str], command: str, loops: int) -> float:
    """Best time of one overlay mount over `lowerdirs` + unshare (as pybuild's sandbox, with a
    network namespace) + chroot + `sh -c command` + unmount, per loop, the scratch dirs made and
    removed outside the time. The least a RUN of `command` can cost in a fresh overlay."""
    scratch = os.path.join(work, "floor")
    script = os.path.join(work, "floor.sh")
    with open(script, "w") as handle:
        handle.write('set -e\ni=0\nwhile [ $i -lt "$1" ]; do\n'
                     '  mount -t overlay overlay \\\n'
                     '    -o "lowerdir=$2,upperdir=$3/$i/u,workdir=$3/$i/w" "$3/$i/r"\n'
                     '  unshare --mount --pid --fork --uts --ipc --net chroot "$3/$i/r" \\\n'
                     '    /bin/sh -c "$4"\n'
                     '  umount "$3/$i/r"\n  i=$((i+1))\ndone\n')

    def prepare() -> None:
        _remove(scratch)
        for number in range(loops):
            for part in "uwr":
                os.makedirs(os.path.join(scratch, str(number), part))
    lower = ":".join(reversed(lowerdirs))
    best = Command(["sh", script, str(loops), lower, scratch, command], before=prepare,
                   after=lambda: _remove(scratch))
    return _per(best_of(FLOOR_RUNS, best)[0], loops)


# -- case B ---------------------------------------------------------------------------------------

def test_case_b_many_runs(session: Session) -> None:
    label = SIZES[0][0]
    base, pybuild = session.bases[label], session.pybuild[label]
    table = Table(f"Case B: N x RUN echo N > /N on the {label} base, best of {RUNS} "
                  f"(load average {_load()})")
    session.tables.append(table)
    pybuild.build(session.context("a" + label, base, [CASE_A])).run()  # snapshots unpacked
    commands: list[tuple[str, Command]] = []
    failures: list[str] = []
    for steps in CASE_B_STEPS:
        context = _case_b_context(session, base, steps)
        probe = pybuild.build(context)
        try:
            probe.run()
        except AssertionError as error:
            failures.append(f"pybuild, {steps} RUNs: {_last_line(str(error))}")
        else:
            layers = pybuild.output_layers()
            assert len(layers) == len(base.diff_ids) + steps
            assert str(steps) in layers[-1], layers[-1]
            commands.append((f"pybuild {steps}", pybuild.build(context)))
            commands.append((f"pybuild --network host {steps}",
                             pybuild.build(context, "--network", "host")))
        if session.buildkit:
            session.buildkit.first_build(context, len(base.diff_ids) + steps)
            commands.append((f"BuildKit {steps}", session.buildkit.build(context)))
        if session.buildah:
            session.buildah.check(context, len(base.diff_ids) + steps)
            commands.append((f"buildah {steps}", session.buildah.build(context)))
    _settle()
    times = _best(RUNS, commands)
    floor = _overlay_floor(session.work, pybuild.snapshot_dirs(), "echo 1 > /1", 20)
    table.add("floor per RUN: overlay + unshare + chroot sh -c 'echo 1 > /1'", floor)
    for tool in ("pybuild", "pybuild --network host", "BuildKit", "buildah"):
        for steps in CASE_B_STEPS:
            if f"{tool} {steps}" not in times:
                continue
            total = times[f"{tool} {steps}"]
            reference = times.get(f"pybuild {steps}")
            table.add(f"{tool}: {steps} RUNs, total", total,
                      versus=("pybuild", reference) if reference and tool != "pybuild" else None,
                      at_least=1 if reference and tool == "BuildKit" else None)
            table.add(f"{tool}: {steps} RUNs, per RUN", _per(total, steps),
                      versus=("floor", floor))
        for first, last in zip(CASE_B_STEPS, CASE_B_STEPS[1:]):
            if f"{tool} {first}" in times and f"{tool} {last}" in times:
                marginal = _between(times[f"{tool} {first}"], times[f"{tool} {last}"],
                                    last - first)
                table.add(f"{tool}: RUN {first + 1} to {last}, per RUN", marginal,
                          versus=("floor", floor), goal="the cost of one more RUN")
    for failure in failures:
        table.add(f"FAILED: {failure}", NOT_MEASURED)
    for name in _missing(session):
        table.add(f"{name}: not available here", NOT_MEASURED)
    if failures:
        pytest.fail("; ".join(failures))
    table.check()


def _last_line(text: str) -> str:
    """The line of a failed build's stderr that says why, long paths cut to their last part."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line = next((l[l.index("pybuild sandbox:"):] for l in lines if "pybuild sandbox:" in l),
                next((l for l in lines if l.startswith("ERROR")), lines[-1] if lines else text))
    where = re.search(r"Dockerfile:(\d+):", text)
    line = re.sub(r"/\S+/([^/\s]+)", r".../\1", line)
    return f"{line} (Dockerfile line {where.group(1)})" if where else line


def _case_b_context(session: Session, base: Base, steps: int) -> str:
    return session.context(f"b{steps}", base, [f"echo {n} > /{n}" for n in range(1, steps + 1)])


# -- the floor and where pybuild's time goes ------------------------------------------------------

def test_floor_and_breakdown(session: Session) -> None:
    label = SIZES[0][0]
    base, pybuild = session.bases[label], session.pybuild[label]
    root = pybuild.snapshot_dirs()[0]  # the busybox root: /bin/true is there
    table = Table(f"The floor on this machine, best of {FLOOR_RUNS} (load average {_load()})")
    session.tables.append(table)
    plain = _looped(["unshare", "--mount", "--pid", "--fork", "--uts", "--ipc", "chroot", root,
                     "/bin/true"])
    net = _looped(["unshare", "--mount", "--pid", "--fork", "--uts", "--ipc", "--net", "chroot",
                   root, "/bin/true"])
    chroot_only = _looped(["chroot", root, "/bin/true"])
    python = Command([sys.executable, "-c", "pass"], env=session.env)
    version = Command([sys.executable, "-m", "builder.cli", "--version"], cwd=str(ROOT),
                      env=session.env)
    imports = Command([sys.executable, "-c", "import builder.build, builder.cli"], cwd=str(ROOT),
                      env=session.env)
    version.run()
    imports.run()
    times = best_of(FLOOR_RUNS, chroot_only, plain, net, python, version, imports)
    table.add("chroot ROOT /bin/true, per run", _per(times[0], FLOOR_LOOPS))
    table.add("unshare --mount --pid --fork --uts --ipc chroot ROOT /bin/true, per run",
              _per(times[1], FLOOR_LOOPS), goal="DESIGN.md: 8.5 ms")
    table.add("... with --net, per run", _per(times[2], FLOOR_LOOPS))
    table.add("python3 -c pass", times[3])
    table.add("pybuild --version", times[4], goal="< 100 ms")
    table.add("python3 -c 'import builder.build, builder.cli'", times[5])
    _breakdown(session, pybuild, base)


def _looped(argv: list[str]) -> Command:
    """`argv` FLOOR_LOOPS times in a shell loop (no Python between the runs)."""
    return Command(["sh", "-c", 'n=$1; shift; i=0; while [ $i -lt $n ]; do "$@"; i=$((i+1)); done',
                    "-", str(FLOOR_LOOPS), *argv])


# (label, file suffix, function, caller file suffix, caller function): cumulative time of the
# function (only its calls from the caller, when one is named), per RUN.
_PARTS = (
    ("RUN step, all of it (builder/steps/run.py run)", "builder/steps/run.py", "run", None, None),
    ("  sandbox, all of it (NamespaceSandbox.run)", "sandbox/namespaces.py", "run", None, None),
    ("    fork the keeper (os.fork in pybuild)", "~", "<built-in method posix.fork>",
     "sandbox/process.py", "supervise"),
    ("    keeper + pid 1 set-up + the command, until it exits", "~",
     "<method 'poll' of 'select.epoll' objects>", "selectors.py", "select"),
    ("    teardown after the command (waitpid of the keeper)", "~",
     "<built-in method posix.waitpid>", "sandbox/process.py", "_stream"),
    ("    mount points the image lacks (missing_stubs + make_stub_layer)",
     "sandbox/rootfs.py", "missing_stubs|make_stub_layer", None, None),
    ("    /etc/hosts file (etc_files)", "sandbox/rootfs.py", "etc_files",
     None, None),
    ("  layer + snapshot (BuildSession.commit_upper)", "builder/session.py", "commit_upper", None,
     None),
    ("    layer tar into the blob store (BuildSession.commit_layer)", "builder/session.py",
     "commit_layer", "builder/session.py", "commit_upper"),
    ("      LayerWriter() start-up (_Sink: buffers, threads)", "layers/tarwriter.py", "__init__",
     "layers/tarwriter.py", "__init__"),
    ("      walk of the upper dir (write_upper)", "layers/overlaydiff.py", "write_upper", None,
     None),
    ("    upper dir -> snapshot (SnapshotStore.adopt)", "layers/snapshots.py", "adopt", None, None),
    ("  snapshot dirs of the image (SnapshotStore.ensure, all calls)", "layers/snapshots.py",
     "ensure", None, None),
    ("  USER from /etc/passwd (resolve_run_user)", "builder/steps/users.py", "resolve_run_user",
     None, None),
    ("  scratch dir made and removed (mkdtemp + rmtree)", "tempfile.py|shutil.py",
     "mkdtemp|rmtree", "builder/steps/run.py", "run"),
    ("step cache: key, miss reason, record (step_key + StepCache.reason/record)",
     "builder/cache/key.py|builder/cache/steps.py", "step_key|reason|record",
     "builder/cache/decide.py|builder/stage.py", "_keyed|_miss|_layer_step"),
)
_PER_BUILD = (
    ("Dockerfile parse (grammar.parser.parse)", "grammar/parser.py", "parse"),
    ("export to the tarball (write_output)", "builder/output/tarball.py", "write_output"),
    ("image store tag (ImageStore.put, fsync)", "layers/imagestore.py", "put"),
    ("sandbox probe (choose_sandbox)", "builder/sandbox/__init__.py", "choose_sandbox"),
)


def _breakdown(session: Session, pybuild: Pybuild, base: Base) -> None:
    """cProfile of one pybuild build of a case B Dockerfile: where a RUN's time goes in
    pybuild's process (the sandbox's children run outside the profiler: their time shows as
    pybuild waiting on them). Python-side figures are inflated by the profiler."""
    steps = CASE_B_STEPS[1]
    context = _case_b_context(session, base, steps)
    profile = os.path.join(session.work, "run.prof")
    command = pybuild.build(context)
    wall = replace(command, argv=[sys.executable, "-m", "cProfile", "-o", profile,
                                  *command.argv[1:]]).run()
    stats = pstats.Stats(profile).stats
    table = Table(f"pybuild per RUN, from cProfile of a {steps}-RUN build on the {base.label} "
                  f"base ({wall.wall:.2f} s under the profiler)")
    session.tables.append(table)
    for label, file, function, caller_file, caller_function in _PARTS:
        seconds = _cumulative(stats, file, function, caller_file, caller_function)
        table.add(label, Timing(seconds / steps, None))
    for label, file, function in _PER_BUILD:
        table.add(f"per build: {label}", Timing(_cumulative(stats, file, function), None))


def _cumulative(stats: dict, file: str, function: str, caller_file: str | None = None,
                caller_function: str | None = None) -> float:
    """Cumulative seconds of the functions matching `file` and `function` (alternatives split by
    `|`), counting only their calls from the named caller when there is one."""
    def matches(key: tuple, names: list[str], suffixes: list[str]) -> bool:
        return key[2] in names and any(key[0].endswith(suffix) for suffix in suffixes)
    total = 0.0
    for key, (_, _, _, cumulative, callers) in stats.items():
        if not matches(key, function.split("|"), file.split("|")):
            continue
        if caller_file is None:
            total += cumulative
            continue
        for caller, figures in callers.items():
            if matches(caller, caller_function.split("|"), caller_file.split("|")):
                total += figures[3]
    return total
