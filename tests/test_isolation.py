"""The isolation strategies against the real kernel: `chroot` and `rootless` give the very image
`namespaces` gives, as root on the host, as a non-root user (with and without subordinate ids),
and inside an unprivileged Docker container with the default seccomp profile and capabilities.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import uuid
from pathlib import Path

import pytest

from builder.errors import BuildError
from builder.sandbox.spec import RunSpec
from builder.sandbox.chroot import ChrootSandbox, probe as chroot_probe
from layers.unpack import apply_layer
from tests.rootless_user import EPOCH, SUBID_FILES, rootless_user
from tests.support import ROOT, busybox_base, docker, pybuild, require

SINGLE_ID_STEPS = """\
FROM busybox:test
RUN mkdir -p /data/sub /data/remade && echo one > /data/one && echo two > /data/sub/two \\
 && echo three > /data/remade/three && ln -s one /data/link && chmod 640 /data/one
RUN rm /etc/group && rm -rf /data/remade && mkdir /data/remade \\
 && chmod 4755 /data/sub/two && mkdir -p /opt/a/b && ln -s /data/sub /opt/a/sub
"""
DOCKERFILE = SINGLE_ID_STEPS + """\
RUN chown 1000:1000 /data/one && chown -R 1000:1000 /opt/a && touch /home/app/new
USER app
RUN echo mine > /home/app/mine
WORKDIR /srv/work
RUN pwd > /tmp/where
"""


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return busybox_base(tmp_path_factory.mktemp("base"))


def build(work: Path, base: Path, dockerfile: str, *options: str) -> tuple[str, str]:
    """Build `dockerfile` as root with its own cache; returns the image ID and the log."""
    context = work / "context"
    context.mkdir(parents=True, exist_ok=True)
    (context / "Dockerfile").write_text(dockerfile)
    env = {"PYBUILD_CACHE_DIR": str(work / "cache"), "SOURCE_DATE_EPOCH": EPOCH}
    assert pybuild("load", "-i", str(base), env=env).returncode == 0
    result = pybuild("--iidfile", str(work / "iid"), "-o", str(work / "image.tar"), *options,
                     str(context), env=env)
    assert result.returncode == 0, result.stderr
    return (work / "iid").read_text(), result.stderr


@pytest.fixture(scope="module")
def reference(tmp_path_factory, base) -> dict[str, str]:
    """The image IDs of the namespaces builds, the reference for the other strategies."""
    return {name: build(tmp_path_factory.mktemp(name), base, text, "--isolation", "namespaces")[0]
            for name, text in (("full", DOCKERFILE), ("single-id", SINGLE_ID_STEPS))}


# -- chroot on the host ---------------------------------------------------------------------------

def test_chroot_gives_the_namespaces_image(tmp_path, base, reference):
    require(chroot_probe(str(tmp_path)) is None, "the chroot sandbox")
    image, log = build(tmp_path, base, DOCKERFILE, "--isolation", "chroot")
    assert "sandbox: chroot (" in log
    assert image == reference["full"]


def test_a_forced_strategy_that_cannot_work_fails(tmp_path, base):
    require(os.geteuid() == 0, "root")
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM busybox:test\nRUN true\n")
    env = {"PYBUILD_CACHE_DIR": str(tmp_path / "cache")}
    assert pybuild("load", "-i", str(base), env=env).returncode == 0
    out = str(tmp_path / "out.tar")
    result = pybuild("--isolation", "rootless", "-o", out, str(context), env=env)
    assert result.returncode == 1
    assert "ERROR: --isolation rootless cannot work here: running as root" in result.stderr
    result = pybuild("--isolation", "chroot", "--network", "none", "-o", out, str(context),
                     env=env)
    assert result.returncode == 1
    assert "RUN --network=none needs a network namespace" in result.stderr


@pytest.fixture
def root(tmp_path, base) -> Path:
    """The busybox image unpacked into a plain directory, as the walk-diff path materializes it,
    with an /etc/hosts and a /dev of its own."""
    require(chroot_probe(str(tmp_path)) is None, "the chroot sandbox")
    directory = tmp_path / "scratch" / "root"
    directory.mkdir(parents=True)
    with tarfile.open(base) as archive:
        layer = json.load(archive.extractfile("manifest.json"))[0]["Layers"][0]
        apply_layer(archive.extractfile(layer), str(directory))
    (directory / "etc" / "hosts").write_text("image's own\n")
    (directory / "dev").mkdir()
    (directory / "dev" / "keep").write_text("image's own\n")
    return directory


def chroot_run(root: Path, script: str, **options) -> tuple[int, str]:
    chunks: list[bytes] = []
    spec = RunSpec(lowerdirs=(), upperdir=str(root), workdir="", scratch=str(root.parent),
                   argv=("/bin/sh", "-c", script), env=("PATH=/bin:/usr/bin", "HOME=/root"),
                   **options)
    status = ChrootSandbox().run(spec, chunks.append)
    return status, b"".join(chunks).decode()


def snapshot(root: Path) -> dict[str, tuple]:
    return {str(path.relative_to(root)): (path.lstat().st_mode, path.lstat().st_mtime_ns,
                                          path.lstat().st_uid)
            for path in [root, *root.rglob("*")]}


@pytest.mark.parametrize("script, status", [("true", 0), ("exit 3", 3), ("no-such-command", 127),
                                            ("kill -9 $$", 137)])
def test_chroot_exit_status(root, script, status):
    assert chroot_run(root, script)[0] == status


def test_chroot_sees_its_own_files_and_leaves_none(root):
    before = snapshot(root)
    status, output = chroot_run(root, "echo out; echo err >&2; cat /etc/hosts;"
                                " ls /proc | wc -l; echo x > /dev/null; cat /dev/keep;"
                                " echo gone > /dev/extra; id -u; pwd", uid=1000, gid=1000,
                                cwd="/home/app")
    assert status == 0, output
    lines = output.splitlines()
    assert lines[:2] == ["out", "err"]
    assert "127.0.0.1\tlocalhost buildkitsandbox" in lines  # generated hosts, as BuildKit's
    assert "0" in lines  # no /proc mounted: nothing of the host's processes
    assert "cat: can't open '/dev/keep': No such file or directory" in lines  # the sandbox's
    assert lines[-2:] == ["1000", "/home/app"]
    assert snapshot(root) == before
    assert (root / "etc" / "hosts").read_text() == "image's own\n"


def test_chroot_keeps_what_the_command_changes(root):
    status, output = chroot_run(root, "echo new > /etc/motd && rm /etc/passwd && mkdir /work",
                                cwd="/made/for/run")
    assert status == 0, output
    assert (root / "etc" / "motd").read_text() == "new\n"
    assert not (root / "etc" / "passwd").exists()
    assert sorted(p.name for p in root.iterdir() if p.name in ("work", "made", "dev", "proc")) == \
        ["dev", "made", "work"]
    assert (root / "dev" / "keep").exists() and not (root / "dev" / "null").exists()


def test_chroot_orphans_die_with_the_command(root):
    status, _ = chroot_run(root, "sleep 6023 & echo started")
    assert status == 0
    assert not _running("sleep 6023")


def test_chroot_interrupt_kills_the_command_and_restores_the_root(root):
    before = snapshot(root)
    timer = threading.Timer(1.0, lambda: os.kill(os.getpid(), 2))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            chroot_run(root, "sleep 3029")
    finally:
        timer.cancel()
    assert not _running("sleep 3029")
    assert snapshot(root) == before


def test_chroot_refuses_network_none(root):
    with pytest.raises(BuildError, match="network namespace"):
        chroot_run(root, "true", network="none")


def _running(pattern: str) -> bool:
    return subprocess.run(["pgrep", "-f", pattern], capture_output=True).returncode == 0


# -- rootless, as a user the test creates -------------------------------------------------------

@pytest.fixture(scope="module")
def user(base):
    with rootless_user(base) as made:
        yield made


def test_rootless_with_subordinate_ids_gives_the_root_image(user, reference):
    user.grant(ranges=True)
    result, image = user.build(DOCKERFILE)
    assert result.returncode == 0, result.stderr
    assert "sandbox: rootless (not root: a user namespace maps uids 0 -> " in result.stderr
    assert "single-id" not in result.stderr
    assert image == reference["full"]


def test_rootless_with_a_single_id_map_builds_and_warns(user, reference):
    user.grant(ranges=False)
    result, image = user.build(SINGLE_ID_STEPS)
    assert result.returncode == 0, result.stderr
    assert "sandbox: rootless (" in result.stderr
    assert "WARNING: rootless with a single-id map" in result.stderr
    assert image == reference["single-id"]
    result, _ = user.build("FROM busybox:test\nRUN touch /x && chown 1000 /x\n")
    assert result.returncode == 1
    assert "Invalid argument" in result.stderr


def test_subid_files_come_back_exactly(base):
    before = {path: Path(path).read_bytes() if os.path.exists(path) else None
              for path in SUBID_FILES}
    with rootless_user(base) as made:
        made.grant(ranges=True)
    assert {path: Path(path).read_bytes() if os.path.exists(path) else None
            for path in SUBID_FILES} == before


# -- inside an unprivileged Docker container ----------------------------------------------------

def test_in_an_unprivileged_container_auto_picks_chroot(tmp_path, base, reference, images):
    """`docker run` as CI runners start jobs: default seccomp profile and capabilities, no
    network. The container's root is the busybox image; pybuild, its Python and the host's
    libraries come in through read-only bind mounts; the cache is on a volume."""
    image = images.name("pybuild-isolation-runner")
    archive = tmp_path / "runner.tar"
    subprocess.run([sys.executable, str(ROOT / "testdata/images/busybox/make.py"), str(archive),
                    "--tag", image], check=True)
    docker("load", "-i", str(archive))
    job = tmp_path / "job"
    (job / "context").mkdir(parents=True)
    (job / "context" / "Dockerfile").write_text(DOCKERFILE)
    shutil.copy(base, job / "base.tar")
    import lark
    import zstandard
    python = os.path.realpath(sys.executable)
    shared = {str(ROOT), sys.base_prefix, sys.prefix, os.path.dirname(python),
              str(Path(lark.__file__).parent), str(Path(zstandard.__file__).parent)}
    shared |= {path for path in ("/lib", "/lib64", "/usr/lib", "/usr/lib64")
               if os.path.exists(path)}
    mounts = [argument for path in sorted(shared) for argument in ("-v", f"{path}:{path}:ro")]
    script = (f"{python} -m builder.cli load -i /job/base.tar && {python} -m builder.cli "
              "--isolation auto --iidfile /job/iid -o /job/image.tar /job/context")
    name = f"pybuild-isolation-{uuid.uuid4().hex[:10]}"
    images.containers.append(name)
    result = docker("run", "--rm", "--name", name, "--network", "none", *mounts,
                    "-v", f"{job}:/job", "-w", str(ROOT), "-e", f"PYTHONPATH={ROOT}",
                    "-e", "PYBUILD_CACHE_DIR=/job/cache", "-e", f"SOURCE_DATE_EPOCH={EPOCH}",
                    "-e", "PYTHONDONTWRITEBYTECODE=1", image, "sh", "-c", script, check=False)
    log = result.stderr.decode(errors="replace")
    assert result.returncode == 0, log
    assert "sandbox: chroot (namespaces: unshare: Operation not permitted (EPERM)" in log
    assert (job / "iid").read_text() == reference["full"]
