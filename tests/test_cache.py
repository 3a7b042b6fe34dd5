"""The build cache: what invalidates what (table-driven), why it says it missed, concurrent builds,
builds killed at random moments, corrupted blobs, prune and du."""
from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from tests.support import ROOT, busybox_base, pybuild

DOCKERFILE = """\
FROM scratch
ARG USED=1
COPY app/ /app/
ENV MODE=$USED
COPY conf.txt /etc/conf.txt
ARG LATE
COPY data.txt /data.txt
"""


def steps(stderr: str) -> list[str]:
    """Per layer step, in order: 'CACHED' or the miss reason."""
    outcome: dict[str, str] = {}
    for line in stderr.splitlines():
        match = re.match(r"#(\d+) (CACHED|not cached: (.*))$", line)
        if match:
            outcome[match.group(1)] = "CACHED" if match.group(2) == "CACHED" else match.group(3)
    return [outcome[n] for n in sorted(outcome, key=int)]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    context = tmp_path / "ctx"
    (context / "app" / "sub").mkdir(parents=True)
    (context / "app" / "main.py").write_text("print('hi')\n")
    (context / "app" / "sub" / "util.py").write_text("x = 1\n")
    (context / "app" / "notes.log").write_text("ignored\n")
    (context / "conf.txt").write_text("conf\n")
    (context / "data.txt").write_text("data\n")
    (context / ".dockerignore").write_text("**/*.log\n")
    (context / "Dockerfile").write_text(DOCKERFILE)
    return context


def build(context: Path, *args: str, cache: Path | None = None) -> str:
    cache = cache or context.parent / "cache"
    result = pybuild("-o", str(context.parent / "image.tar"), "--progress", "plain", *args,
                     str(context), env={"PYBUILD_CACHE_DIR": str(cache)})
    assert result.returncode == 0, result.stderr
    return result.stderr


def _edit(ctx): (ctx / "app" / "main.py").write_text("print('changed')\n")
def _touch(ctx): os.utime(ctx / "app" / "main.py", (1, 1))
def _chmod(ctx): os.chmod(ctx / "app" / "main.py", 0o755)
def _add(ctx): (ctx / "app" / "new.py").write_text("new\n")
def _remove(ctx): (ctx / "app" / "sub" / "util.py").unlink()
def _ignored(ctx): (ctx / "app" / "notes.log").write_text("still ignored\n")
def _same_size_same_mtime(ctx):
    path = ctx / "conf.txt"
    st = path.stat()
    path.write_text("CONF\n")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
def _reorder(ctx):
    lines = DOCKERFILE.splitlines()
    lines[4], lines[6] = lines[6], lines[4]
    (ctx / "Dockerfile").write_text("\n".join(lines) + "\n")
def _nothing(ctx): pass


CASES = [
    # name, change to the project, extra build args, expected per COPY step
    ("edit a copied file", _edit, (), ["app/main.py changed", "an earlier step changed", "an earlier step changed"]),
    ("touch without change", _touch, (), ["CACHED", "CACHED", "CACHED"]),
    ("chmod", _chmod, (), ["mode of app/main.py changed", "an earlier step changed", "an earlier step changed"]),
    ("add a file", _add, (), ["app/new.py added", "an earlier step changed", "an earlier step changed"]),
    ("remove a file", _remove, (), ["app/sub/util.py removed", "an earlier step changed", "an earlier step changed"]),
    ("change an ignored file", _ignored, (), ["CACHED", "CACHED", "CACHED"]),
    ("content change with size and mtime kept", _same_size_same_mtime, (), ["CACHED", "conf.txt changed", "an earlier step changed"]),
    ("build-arg used by the first ARG", _nothing, ("--build-arg", "USED=2"), ["ARG USED 1 -> 2", "an earlier step changed", "an earlier step changed"]),
    ("build-arg declared late", _nothing, ("--build-arg", "LATE=x"), ["CACHED", "CACHED", "ARG LATE (unset) -> x"]),
    ("build-arg nobody declares", _nothing, ("--build-arg", "UNUSED=x"), ["CACHED", "CACHED", "CACHED"]),
    ("reorder instructions", _reorder, (), ["CACHED", "instruction changed", "instruction changed"]),
    ("--no-cache", _nothing, ("--no-cache",), ["--no-cache", "--no-cache", "--no-cache"]),
]


@pytest.mark.parametrize("name, change, args, expected", CASES, ids=[c[0] for c in CASES])
def test_invalidation(project, name, change, args, expected):
    build(project)
    assert steps(build(project)) == ["CACHED"] * 3
    change(project)
    assert steps(build(project, *args)) == expected


def test_a_cache_hit_gives_the_image_a_clean_build_gives(project, tmp_path):
    env = {"SOURCE_DATE_EPOCH": "1600000000"}
    first = pybuild("-o", str(tmp_path / "a.tar"), "--iidfile", str(tmp_path / "a"), str(project),
                    env={**env, "PYBUILD_CACHE_DIR": str(tmp_path / "c1")})
    again = pybuild("-o", str(tmp_path / "b.tar"), "--iidfile", str(tmp_path / "b"), str(project),
                    env={**env, "PYBUILD_CACHE_DIR": str(tmp_path / "c1")})
    other = pybuild("-o", str(tmp_path / "c.tar"), "--iidfile", str(tmp_path / "c"), str(project),
                    env={**env, "PYBUILD_CACHE_DIR": str(tmp_path / "c2")})
    assert first.returncode == again.returncode == other.returncode == 0
    assert "CACHED" in again.stderr
    assert (tmp_path / "a").read_text() == (tmp_path / "b").read_text() == (tmp_path / "c").read_text()


def test_no_cache_filter_runs_only_that_stage(tmp_path):
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "a.txt").write_text("a")
    (context / "Dockerfile").write_text("FROM scratch AS one\nCOPY a.txt /one\n"
                                        "FROM scratch AS two\nCOPY --from=one /one /two\nCOPY a.txt /a\n")
    build(context)
    assert steps(build(context, "--no-cache-filter", "two")) == [
        "CACHED", "--no-cache-filter two", "--no-cache-filter two"]


def test_a_corrupted_blob_is_never_used(project):
    build(project)
    blobs = project.parent / "cache" / "blobs" / "sha256"
    for blob in blobs.iterdir():
        data = bytearray(blob.read_bytes())
        if len(data) > 1024 and b"print" in data:
            data[data.index(b"print")] ^= 0x20
            blob.write_bytes(bytes(data))
    outcome = steps(build(project))
    assert "was missing or damaged" in outcome[0], outcome
    # The later results are reused only if the rebuilt layer came out byte for byte the same.
    assert all(r == "CACHED" or "was missing or damaged" in r for r in outcome[1:]), outcome
    assert steps(build(project)) == ["CACHED"] * 3


def test_concurrent_builds_share_one_cache(project):
    cache = project.parent / "shared-cache"
    env = dict(os.environ, PYBUILD_CACHE_DIR=str(cache), SOURCE_DATE_EPOCH="1600000000")
    processes = [subprocess.Popen([sys.executable, "-m", "builder.cli", "-o",
                                   str(project.parent / f"out{i}.tar"), "--iidfile",
                                   str(project.parent / f"iid{i}"), str(project)],
                                  cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
                 for i in range(4)]
    for process in processes:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
    ids = {(project.parent / f"iid{i}").read_text() for i in range(4)}
    assert len(ids) == 1
    again = pybuild("-o", str(project.parent / "again.tar"), "--progress", "plain", str(project),
                    env={"PYBUILD_CACHE_DIR": str(cache), "SOURCE_DATE_EPOCH": "1600000000"})
    assert steps(again.stderr) == ["CACHED"] * 3


def test_the_base_image_is_named_when_it_changes(project):
    build(project)
    assert steps(build(project, "--build-arg", "X=1"))[0] == "CACHED"
    with_epoch = pybuild("-o", str(project.parent / "e.tar"), str(project),
                         env={"PYBUILD_CACHE_DIR": str(project.parent / "cache"),
                              "SOURCE_DATE_EPOCH": "5"})
    assert steps(with_epoch.stderr)[0] == "SOURCE_DATE_EPOCH changed"


def test_builds_killed_at_random_moments_leave_a_usable_cache(tmp_path):
    base = busybox_base(tmp_path)
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "big").write_bytes(os.urandom(8 << 20))
    (context / "Dockerfile").write_text(
        "FROM busybox:test\nCOPY big /big\nRUN cp /big /big2 && echo done > /marker\n"
        "RUN sleep 0.3 && rm /big2\nCOPY big /again\n")
    env = dict(os.environ, SOURCE_DATE_EPOCH="1600000000")
    killed_cache, clean_cache = tmp_path / "killed", tmp_path / "clean"
    for cache in (killed_cache, clean_cache):
        assert pybuild("load", "-i", str(base), env={"PYBUILD_CACHE_DIR": str(cache)}).returncode == 0
    rng = random.Random(7)
    for _ in range(6):
        process = subprocess.Popen([sys.executable, "-m", "builder.cli", "-o", str(tmp_path / "k.tar"),
                                    str(context)], cwd=ROOT, stderr=subprocess.DEVNULL,
                                   env={**env, "PYBUILD_CACHE_DIR": str(killed_cache)})
        time.sleep(rng.uniform(0.2, 2.0))
        process.send_signal(signal.SIGKILL)
        process.wait()
    ids, configs, logs = [], [], []
    for cache in (killed_cache, clean_cache):
        iid = tmp_path / f"{cache.name}.iid"
        out = tmp_path / f"{cache.name}.tar"
        result = pybuild("-o", str(out), "--iidfile", str(iid), str(context),
                         env={**env, "PYBUILD_CACHE_DIR": str(cache)})
        assert result.returncode == 0, result.stderr
        ids.append(iid.read_text())
        logs.append(result.stderr)
        with tarfile.open(out) as archive:
            manifest = json.load(archive.extractfile("manifest.json"))[0]
            configs.append(json.load(archive.extractfile(manifest["Config"])))
    assert ids[0] == ids[1], (configs, logs)


def test_prune_and_du(project):
    cache = project.parent / "cache"
    build(project)
    du = pybuild("du", env={"PYBUILD_CACHE_DIR": str(cache)})
    assert du.returncode == 0 and b"cache entries  3" in du.stdout
    kept = pybuild("prune", env={"PYBUILD_CACHE_DIR": str(cache)})
    assert kept.returncode == 0 and b"removed 0 cache entries" in kept.stdout
    gone = pybuild("prune", "--all", env={"PYBUILD_CACHE_DIR": str(cache)})
    assert gone.returncode == 0 and b"removed 3 cache entries" in gone.stdout
    assert os.listdir(cache / "blobs" / "sha256") == []
    assert steps(build(project)) == ["no earlier build"] * 3 or "CACHED" not in steps(build(project))


def test_prune_removes_the_compressed_variants_of_the_layers_it_removes(project):
    cache = project.parent / "cache"
    build(project, "--compression", "gzip")
    variants = cache / "compressed" / "sha256"
    assert len(os.listdir(variants)) == 3
    gone = pybuild("prune", "--all", env={"PYBUILD_CACHE_DIR": str(cache)})
    assert gone.returncode == 0, gone.stderr
    assert os.listdir(variants) == [] and os.listdir(cache / "blobs" / "sha256") == []


def test_prunes_running_side_by_side_each_succeed(project):
    """Two prunes list the same unreferenced blobs; the one that loses a removal must not fail."""
    cache = project.parent / "cache"
    build(project)
    blobs = cache / "blobs" / "sha256"
    for n in range(4000):
        (blobs / f"{n:064x}").write_bytes(b"x" * 64)
    env = {**os.environ, "PYBUILD_CACHE_DIR": str(cache)}
    command = [sys.executable, "-m", "builder.cli", "prune", "--all"]
    prunes = [subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE) for _ in range(4)]
    results = [(p.wait(timeout=120), p.stderr.read().decode()) for p in prunes]
    assert [code for code, _ in results] == [0] * 4, results
    assert os.listdir(blobs) == []


def test_a_no_op_rebuild_gives_the_same_image_and_leaves_the_tarball_alone(project):
    out = project.parent / "image.tar"
    ids, stats = [], []
    for _ in range(2):
        iid = project.parent / "iid"
        result = pybuild("-o", str(out), "--iidfile", str(iid), str(project),
                         env={"PYBUILD_CACHE_DIR": str(project.parent / "cache")})
        assert result.returncode == 0, result.stderr
        ids.append(iid.read_text())
        stats.append((out.stat().st_mtime_ns, out.stat().st_ino))
    assert ids[0] == ids[1]
    assert "unchanged: it already holds this image" in result.stderr
    assert stats[0] == stats[1]
    out.write_bytes(b"tampered")
    result = pybuild("-o", str(out), str(project), env={"PYBUILD_CACHE_DIR": str(project.parent / "cache")})
    assert result.returncode == 0 and out.stat().st_size > 1000
