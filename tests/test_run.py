"""RUN layers: the overlay upper-dir path and the walk-diff fallback (forced with
PYBUILD_NO_OVERLAY=1) must give the very same image, and builds must be reproducible."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from tests.support import ROOT, busybox_base, pybuild

DOCKERFILE = """\
FROM busybox:test
RUN mkdir -p /data/keep /data/gone /data/remade /data/asfile && echo 1 > /data/keep/a \\
 && echo 2 > /data/gone/b && echo 3 > /data/remade/c && echo 4 > /data/asfile/d \\
 && echo 5 > /data/todir && echo 6 > /data/chmod-me
RUN rm -rf /data/gone && rm -rf /data/remade && mkdir /data/remade && echo new > /data/remade/n \\
 && rm -rf /data/asfile && echo file > /data/asfile && rm /data/todir && mkdir /data/todir \\
 && chmod 600 /data/chmod-me && ln /data/keep/a /data/keep/hard && ln -s a /data/keep/soft \\
 && mkfifo /data/fifo && chown 1000:50 /data/keep/a && echo x >> /tmp/t && touch /data/keep \
 && echo aaaa > /data/same && touch -d @1000000000 /data/same
RUN echo bbbb > /data/same && touch -d @1000000000 /data/same
RUN true
"""


@pytest.fixture(scope="module")
def busybox_tar(tmp_path_factory) -> Path:
    return busybox_base(tmp_path_factory.mktemp("base"))


def build(tmp_path: Path, name: str, busybox_tar: Path, **env: str) -> str:
    cache = tmp_path / f"cache-{name}"
    context = tmp_path / "context"
    context.mkdir(exist_ok=True)
    (context / "Dockerfile").write_text(DOCKERFILE)
    environment = {"PYBUILD_CACHE_DIR": str(cache), "SOURCE_DATE_EPOCH": "1700000000", **env}
    assert pybuild("load", "-i", str(busybox_tar), env=environment).returncode == 0
    iid = tmp_path / f"{name}.iid"
    result = pybuild("--iidfile", str(iid), "-o", str(tmp_path / f"{name}.tar"), str(context),
                     env=environment)
    assert result.returncode == 0, result.stderr
    return iid.read_text()


def test_walk_diff_fallback_gives_the_same_image(tmp_path, busybox_tar):
    overlay = build(tmp_path, "overlay", busybox_tar)
    walked = build(tmp_path, "walk", busybox_tar, PYBUILD_NO_OVERLAY="1")
    assert overlay == walked


def test_two_clean_builds_give_the_same_image(tmp_path, busybox_tar):
    assert build(tmp_path, "one", busybox_tar) == build(tmp_path, "two", busybox_tar)


@pytest.mark.parametrize("signal_number, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_the_build_and_leaves_nothing_behind(tmp_path, busybox_tar, signal_number,
                                                            status):
    cache = tmp_path / "cache"
    env = dict(os.environ, PYBUILD_CACHE_DIR=str(cache))
    assert pybuild("load", "-i", str(busybox_tar), env=env).returncode == 0
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM busybox:test\nRUN echo started && sleep 3021\n")
    out = tmp_path / "image.tar"
    # SIGINT at its default, as in a terminal: a pytest started as a background job passes it on
    # ignored, and pybuild keeps what it is given
    process = subprocess.Popen([sys.executable, "-m", "builder.cli", "-o", str(out), str(context)],
                               cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not _running("sleep 3021"):
        time.sleep(0.1)
    process.send_signal(signal_number)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == status, stderr
    assert not _running("sleep 3021")
    assert not out.exists()
    assert os.listdir(cache / "tmp") == []
    with open("/proc/self/mountinfo") as mounts:
        assert str(cache) not in mounts.read()


def _running(pattern: str) -> bool:
    return subprocess.run(["pgrep", "-f", pattern], capture_output=True).returncode == 0


def test_many_layers_stack(tmp_path, busybox_tar):
    """More layers than full snapshot paths would fit in overlayfs's one-page mount options."""
    context = tmp_path / "context"
    context.mkdir()
    steps = "".join(f"RUN echo {n} > /layer-{n}\n" for n in range(70))
    (context / "Dockerfile").write_text(f"FROM busybox:test\n{steps}RUN ls / | grep -c layer- > /count\n")
    env = {"PYBUILD_CACHE_DIR": str(tmp_path / "cache")}
    assert pybuild("load", "-i", str(busybox_tar), env=env).returncode == 0
    out = tmp_path / "image.tar"
    result = pybuild("-o", str(out), str(context), env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    with tarfile.open(out) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))[0]
        assert len(manifest["Layers"]) == 72
        with tarfile.open(fileobj=archive.extractfile(manifest["Layers"][-1])) as top:
            assert top.extractfile("count").read() == b"70\n"


def _last_layer(image: Path) -> dict[str, bytes]:
    """The regular files of the image's top layer, by path."""
    with tarfile.open(image) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))[0]
        with tarfile.open(fileobj=archive.extractfile(manifest["Layers"][-1])) as top:
            return {member.name: top.extractfile(member).read() for member in top if member.isfile()}


def test_onbuild_triggers_of_a_stored_base_image_run_after_its_from(tmp_path, busybox_tar):
    env = {"PYBUILD_CACHE_DIR": str(tmp_path / "cache")}
    assert pybuild("load", "-i", str(busybox_tar), env=env).returncode == 0
    parent, child = tmp_path / "parent", tmp_path / "child"
    parent.mkdir()
    child.mkdir()
    (parent / "Dockerfile").write_text("FROM busybox:test\n"
                                       "ONBUILD RUN echo \"trigger in $(cat /stage)\" > /triggered\n")
    result = pybuild("-t", "onbuild-parent:1", "-o", str(tmp_path / "parent.tar"), str(parent), env=env)
    assert result.returncode == 0, result.stderr
    (child / "Dockerfile").write_text("FROM onbuild-parent:1\nRUN echo child > /stage\n")
    result = pybuild("-o", str(tmp_path / "child.tar"), str(child), env=env)
    assert result.returncode == 0, result.stderr
    # The trigger ran right after FROM, before the child's own RUN wrote /stage.
    with tarfile.open(tmp_path / "child.tar") as archive:
        manifest = json.load(archive.extractfile("manifest.json"))[0]
    assert len(manifest["Layers"]) == 3
    assert _last_layer(tmp_path / "child.tar") == {"stage": b"child\n"}
    assert "cat: can't open '/stage'" in result.stderr


def test_base_snapshots_are_unpacked_once_and_shared(tmp_path, busybox_tar):
    """Two builds on one base use the same snapshot directory: it is unpacked by the first."""
    env = {"PYBUILD_CACHE_DIR": str(tmp_path / "cache")}
    assert pybuild("load", "-i", str(busybox_tar), env=env).returncode == 0
    snapshots = tmp_path / "cache" / "snapshots"
    for number in (1, 2):
        context = tmp_path / f"context{number}"
        context.mkdir()
        (context / "Dockerfile").write_text(f"FROM busybox:test\nRUN echo {number} > /n\n")
        result = pybuild("-o", str(tmp_path / f"{number}.tar"), str(context), env=env)
        assert result.returncode == 0, result.stderr
        if number == 1:
            first = {entry.name: entry.stat().st_ino for entry in snapshots.iterdir()}
    second = {entry.name: entry.stat().st_ino for entry in snapshots.iterdir()}
    assert len(second) == len(first) + 1  # the second build added its RUN's snapshot only
    assert {name: second[name] for name in first} == first  # the base's was not made again


def test_security_insecure_needs_the_entitlement_and_then_may_make_devices(tmp_path, busybox_tar):
    """RUN --security=insecure keeps the sandbox's privileges (no user namespace of its own), so
    mknod works as under Docker's root daemon; only with --allow security.insecure, as buildx."""
    env = {"PYBUILD_CACHE_DIR": str(tmp_path / "cache")}
    assert pybuild("load", "-i", str(busybox_tar), env=env).returncode == 0
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(
        "FROM busybox:test\nRUN --security=insecure mknod /null-copy c 1 3\n"
        "RUN mknod /refused c 1 3\n")
    out = tmp_path / "image.tar"
    refused = pybuild("-o", str(out), str(context), env=env)
    assert refused.returncode == 1
    assert "Dockerfile:2" in refused.stderr
    assert "RUN --security=insecure needs the security.insecure entitlement" in refused.stderr
    allowed = pybuild("--allow", "security.insecure", "-o", str(out), str(context), env=env)
    assert allowed.returncode == 1  # the second RUN, not insecure, may not
    assert "mknod: /refused: Operation not permitted" in allowed.stderr
    assert "Dockerfile:3" in allowed.stderr
    (context / "Dockerfile").write_text(
        "FROM busybox:test\nRUN --security=insecure mknod /null-copy c 1 3\n")
    allowed = pybuild("--allow", "security.insecure", "-o", str(out), str(context), env=env)
    assert allowed.returncode == 0, allowed.stderr
    with tarfile.open(out) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))[0]
        with tarfile.open(fileobj=archive.extractfile(manifest["Layers"][-1])) as top:
            node = top.getmember("null-copy")
    assert node.ischr() and (node.devmajor, node.devminor) == (1, 3)
