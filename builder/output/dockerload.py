"""`--load`: hand the built image to a Docker engine through the docker command, so a build can be
followed by `docker run` with no tarball in between."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

from layers.archive import ArchiveImage, write_archive
from layers.errors import LayerError


def docker_command() -> str | None:
    """The docker CLI: /usr/bin/docker when there is one (the distribution's, which still carries
    `docker load`), else the first on PATH."""
    if os.access("/usr/bin/docker", os.X_OK):
        return "/usr/bin/docker"
    return shutil.which("docker")


def load_file(docker: str, path: str) -> list[str]:
    """`docker load -i path`; returns what it printed (`Loaded image: app:1`), a line each."""
    return _load([docker, "load", "-i", path], None)[1]


def load_archive(docker: str, image: ArchiveImage) -> tuple[str, list[str]]:
    """Stream the archive into `docker load`'s stdin, never writing it to disk; returns the
    manifest digest and what docker printed."""
    return _load([docker, "load"], image)


def _load(command: list[str], image: ArchiveImage | None) -> tuple[str, list[str]]:
    """Run docker load, feeding it `image` if given; a failure is a LayerError with what docker
    said. Its output goes to a temp file, not a pipe, so it cannot block on it while the archive
    is being written; interrupted, it is killed."""
    digest = ""
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(command, stdout=output, stderr=output, stdin=(
            subprocess.DEVNULL if image is None else subprocess.PIPE))
        try:
            if image is not None:
                try:
                    with process.stdin:
                        digest = write_archive(process.stdin, image)
                except BrokenPipeError:  # docker stopped reading: what it printed says why
                    pass
            status = process.wait()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        output.seek(0)
        lines = output.read().decode(errors="replace").splitlines()
    if status != 0 or (image is not None and not digest):
        raise LayerError("docker load failed: " + ("\n".join(lines) or f"exit status {status}"))
    return digest, lines
