"""Helpers the end-to-end tests share: running pybuild, and the real Docker engine.

A test that needs Docker skips when no engine answers on a developer's machine, and fails under
CI (`CI=true`), where a missing component is a broken machine, not a reason to skip.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Docker 20.10's own CLI carries BuildKit; a newer CLI without buildx cannot `docker build`.
DOCKER = "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else (shutil.which("docker") or "docker")


def require(available: bool, what: str) -> None:
    """Skip a test whose component is missing, except under CI, where that is a failure."""
    if available:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is required under CI but is missing")
    pytest.skip(f"{what} is not available")


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: bytes
    stderr: str


def pybuild(*args: str, cwd: Path | None = None, env: dict | None = None,
            input: bytes | None = None, timeout: int = 300) -> Result:
    """Run the pybuild CLI in a subprocess, as a user would."""
    full_env = dict(os.environ, **(env or {}))
    process = subprocess.run([sys.executable, "-m", "builder.cli", *args], cwd=cwd, env=full_env,
                             input=input, capture_output=True, timeout=timeout)
    return Result(process.returncode, process.stdout, process.stderr.decode(errors="replace"))


def busybox_base(directory: Path) -> Path:
    """The busybox:test image (made offline from Debian's busybox-static) as an archive in
    `directory`, for tests that RUN commands: they need the namespaces sandbox too."""
    from builder.sandbox.namespaces import probe
    usable, reason = probe()
    require(usable, f"the namespaces sandbox ({reason})")
    archive = directory / "busybox.tar"
    subprocess.run([sys.executable, str(ROOT / "testdata/images/busybox/make.py"), str(archive),
                    "--tag", "busybox:test"], check=True)
    return archive


def build_over(tmp_path: Path, base: Path, dockerfile: str, *options: str) -> tuple[Path, Result]:
    """Build `dockerfile` (a context holding only it) with a cache of its own in `tmp_path`,
    the `base` archive loaded into it first; the tarball and the successful result."""
    context = tmp_path / "context"
    context.mkdir(exist_ok=True)
    (context / "Dockerfile").write_text(dockerfile)
    env = {"PYBUILD_CACHE_DIR": str(tmp_path / "cache")}
    assert pybuild("load", "-i", str(base), env=env).returncode == 0
    out = tmp_path / "image.tar"
    result = pybuild("-o", str(out), *options, str(context), env=env)
    assert result.returncode == 0, result.stderr
    return out, result


def image_file(tarball: Path, path: str) -> bytes:
    """The content of the file at `path` in the image of a docker-save `tarball` (top layer
    wins)."""
    found = None
    with tarfile.open(tarball) as archive:
        for layer in json.load(archive.extractfile("manifest.json"))[0]["Layers"]:
            with tarfile.open(fileobj=archive.extractfile(layer)) as entries:
                for info in entries:
                    if info.name.lstrip("./") == path.lstrip("/") and info.isfile():
                        found = entries.extractfile(info).read()
    if found is None:
        raise AssertionError(f"{tarball} has no file {path}")
    return found


def docker_available() -> bool:
    try:
        return subprocess.run([DOCKER, "info"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def docker(*args: str, input: bytes | None = None, check: bool = True,
           timeout: int = 300) -> subprocess.CompletedProcess:
    process = subprocess.run([DOCKER, *args], input=input, capture_output=True, timeout=timeout,
                             env=dict(os.environ, DOCKER_BUILDKIT="1"))
    if check and process.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {process.stderr.decode()}")
    return process


def docker_build(work: Path, images: DockerImages, dockerfile: str, path: str) -> str:
    """The file at `path` in what `docker build --network none` makes of `dockerfile` (whose
    FROM busybox:test is a busybox image of the test's own, removed afterwards), as text."""
    work.mkdir(parents=True, exist_ok=True)
    tag = images.name("pybuild-busybox")
    archive = work / "docker-base.tar"
    subprocess.run([sys.executable, str(ROOT / "testdata/images/busybox/make.py"), str(archive),
                    "--tag", tag], check=True)
    docker("load", "-i", str(archive))
    context = work / "docker-context"
    context.mkdir()
    (context / "Dockerfile").write_text(dockerfile.replace("busybox:test", tag))
    docker("build", "--network", "none", "-o", f"type=local,dest={work / 'docker-out'}",
           str(context))
    return (work / "docker-out" / path).read_text()


class DockerImages:
    """Unique image names for one test, all removed afterwards (only ours, never a prune)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.containers: list[str] = []

    def name(self, stem: str = "pybuild-test") -> str:
        name = f"{stem}-{uuid.uuid4().hex[:10]}:latest"
        self.names.append(name)
        return name

    def load(self, tarball: Path) -> str:
        output = docker("load", "-i", str(tarball)).stdout.decode()
        return output

    def inspect(self, name: str) -> dict:
        return json.loads(docker("image", "inspect", name).stdout)[0]

    def run(self, name: str, *command: str) -> subprocess.CompletedProcess:
        return docker("run", "--rm", "--network", "none", name, *command, check=False)

    def cleanup(self) -> None:
        for container in self.containers:
            docker("rm", "-f", container, check=False)
        if self.names:
            docker("rmi", "-f", *self.names, check=False)


@contextmanager
def interrupted_after(seconds: float) -> Iterator[None]:
    """Send this process SIGINT after `seconds`, as Ctrl-C would, with Python's handler in place
    for it (a Python started as a shell's background job keeps SIGINT ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(seconds, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
