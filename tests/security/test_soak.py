"""Crash and concurrency soak (issue 11): builds race each other and `pybuild prune` on one cache,
and are SIGKILLed at random moments, for PYBUILD_SOAK_SECONDS (60 by default; set it higher for a
long soak: `PYBUILD_SOAK_SECONDS=1800 python3 -m pytest -q -s tests/security/test_soak.py`).

The moments come from a seeded random generator: the seed is printed, and PYBUILD_SOAK_SEED
replays a session. Afterwards:
- every build and prune that was not killed succeeded (a race is not a failure),
- a build on the soaked cache gives the image a clean cache gives (same image ID, with
  SOURCE_DATE_EPOCH set),
- after `pybuild prune --all`, the soaked cache holds what the clean cache holds after the same
  build and prune, and `pybuild du` accounts for every byte on disk under the cache root.
Killed processes leave their temporary files in per-process directories under tmp/, which the
next build or prune removes (layers/scratch.py): after the final prune nothing is left there.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path


from builder.cache.prune import usage
from tests.support import ROOT, busybox_base, pybuild

DOCKERFILE = """\
FROM busybox:test AS base
ARG N=0
COPY big /big
RUN cp /big /big2 && echo "$N" > /n
FROM base
ARG N=0
COPY small /small
RUN sleep 0.2 && rm /big2 && echo "$N $N" > /m
"""
EPOCH = "1600000000"
# Files of the cache root that hold its records, not its content: the index, the image store and
# the sandbox's remembered probe answers.
_RECORDS = ("index.sqlite", "images", "sandbox-probes.json")
_SCRATCH = "tmp"


def _seconds() -> float:
    return float(os.environ.get("PYBUILD_SOAK_SECONDS", "60"))


def _spawn(cache: Path, tmp: Path, rng: random.Random, number: int) -> tuple[str, subprocess.Popen]:
    """A build with one of a few build-args (so there are results to prune), or a prune."""
    env = dict(os.environ, SOURCE_DATE_EPOCH=EPOCH, PYBUILD_CACHE_DIR=str(cache))
    if rng.random() < 0.3:
        args = rng.choice([["prune", "--all"], ["prune", "--keep-storage", "1MB"], ["prune"]])
    else:
        args = ["--progress=plain", "--build-arg", f"N={rng.randrange(4)}",
                "-o", str(tmp / f"soak{number}.tar"), str(tmp / "ctx")]
    process = subprocess.Popen([sys.executable, "-m", "builder.cli", *args], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return " ".join(args[:3]), process


def _bytes_on_disk(cache: Path) -> int:
    """The size of every file under the cache root but its records and its scratch space."""
    total = 0
    for directory, _, files in os.walk(cache):
        relative = Path(directory).relative_to(cache).parts
        for name in files:
            top = relative[0] if relative else name
            if top.startswith(_RECORDS) or top == _SCRATCH:
                continue
            total += os.lstat(os.path.join(directory, name)).st_size
    return total


def _kept(cache: Path) -> dict[str, list[str]]:
    """The blobs and snapshots of a cache root, by name."""
    return {part: sorted(n for n in os.listdir(cache / part) if not n.startswith("."))
            for part in ("blobs/sha256", "snapshots")}


def _leaked(cache: Path) -> list[str]:
    """Temporary files and directories: what only a process that died mid-way leaves."""
    found = [f"{part}/{n}" for part in ("blobs/sha256", "snapshots")
             for n in sorted(os.listdir(cache / part)) if n.startswith(".")]
    scratch = cache / _SCRATCH
    return found + [f"{_SCRATCH}/{n}" for n in sorted(os.listdir(scratch) if scratch.exists() else ())]


def _final(cache: Path, tmp: Path) -> str:
    iid = tmp / f"{cache.name}.iid"
    built = pybuild("--progress=plain", "--build-arg", "N=1", "-o", str(tmp / f"{cache.name}.tar"),
                    "--iidfile", str(iid), str(tmp / "ctx"),
                    env={"SOURCE_DATE_EPOCH": EPOCH, "PYBUILD_CACHE_DIR": str(cache)})
    assert built.returncode == 0, built.stderr
    return iid.read_text()


def test_builds_and_prunes_racing_and_killed_leave_a_correct_cache(tmp_path):
    base = busybox_base(tmp_path)
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "big").write_bytes(os.urandom(4 << 20))
    (context / "small").write_text("small\n")
    (context / "Dockerfile").write_text(DOCKERFILE)
    soaked, clean = tmp_path / "soaked", tmp_path / "clean"
    for cache in (soaked, clean):
        assert pybuild("load", "-i", str(base), env={"PYBUILD_CACHE_DIR": str(cache)}).returncode == 0
    seed = int(os.environ.get("PYBUILD_SOAK_SEED") or random.randrange(1 << 32))
    print(f"soak seed {seed} (PYBUILD_SOAK_SEED={seed} replays it), {_seconds():.0f} s")
    rng = random.Random(seed)
    deadline = time.monotonic() + _seconds()
    rounds = killed = 0
    failures = []
    while time.monotonic() < deadline:
        rounds += 1
        running = [_spawn(soaked, tmp_path, rng, n) for n in range(rng.randint(1, 3))]
        time.sleep(rng.uniform(0.1, 2.5))
        for what, process in running:
            if process.poll() is None and rng.random() < 0.6:
                process.send_signal(signal.SIGKILL)
                killed += 1
        for what, process in running:
            _, stderr = process.communicate(timeout=300)
            if process.returncode not in (0, -signal.SIGKILL):
                failures.append(f"{what}: exit {process.returncode}\n{stderr.decode()[-2000:]}")
    print(f"{rounds} rounds, {killed} processes killed")
    assert not failures, f"seed {seed}: " + "\n".join(failures)

    assert _final(soaked, tmp_path) == _final(clean, tmp_path), f"seed {seed}"
    for cache in (soaked, clean):
        pruned = pybuild("prune", "--all", env={"PYBUILD_CACHE_DIR": str(cache)})
        assert pruned.returncode == 0, pruned.stderr
    found = usage(str(soaked))
    assert _kept(soaked) == _kept(clean), f"seed {seed}"
    assert found.blob_bytes + found.snapshot_bytes == _bytes_on_disk(soaked), f"seed {seed}"
    assert _leaked(soaked) == [], f"seed {seed}"
