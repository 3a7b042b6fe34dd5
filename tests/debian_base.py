"""The Debian base image and the local apt repository of testdata/images/debian/make.py, for
the tests that run apt and pip: .ci/setup prepares them once per machine (debootstrap from the
Debian mirror); the tests themselves only talk to 127.0.0.1.

A missing preparation skips a developer's test and fails under CI, like any missing component.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.registry_support import serve, shut_down
from tests.support import ROOT, require

RECIPE = ROOT / "testdata" / "images" / "debian" / "make.py"
DATA = Path(os.environ.get("PYBUILD_DEBIAN_DATA", "/var/cache/pybuild-testdata/debian"))
BASE = "debian:test"
NO_PATH_BASE = "debian-nopath:test"  # the same root, an empty config (no Env PATH)


def debian_archive(directory: Path) -> Path:
    """A docker-save archive in `directory` of BASE and NO_PATH_BASE; needs root (the root
    holds files only root may read)."""
    require((DATA / "READY").exists() and os.geteuid() == 0,
            f"the Debian base prepared in {DATA} (as root: `{RECIPE} prepare`, run by .ci/setup)")
    archive = directory / "debian.tar"
    subprocess.run([sys.executable, str(RECIPE), "image", str(DATA), str(archive), "--tag", BASE,
                    "--imported-tag", NO_PATH_BASE], check=True)
    return archive


def prepared_debs() -> list[str]:
    """The .deb files of the local repository."""
    return json.loads((DATA / "READY").read_text())["debs"]


@dataclass(frozen=True)
class AptRepo:
    """The local repository served on 127.0.0.1; `requests` lists the paths asked for."""
    server: ThreadingHTTPServer

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/"

    @property
    def requests(self) -> list[str]:
        return list(self.server.requests)

    def debs_requested(self) -> list[str]:
        return [path for path in self.requests if path.endswith(".deb")]


class _RepoHandler(SimpleHTTPRequestHandler):
    """Files of the repository, each request's path recorded, no log on stderr."""

    def __init__(self, request, client_address, server) -> None:
        super().__init__(request, client_address, server, directory=str(server.repo))

    def send_head(self):
        self.server.requests.append(self.path)
        return super().send_head()

    def log_message(self, *args) -> None:
        """Quiet."""


@contextmanager
def apt_repo() -> Iterator[AptRepo]:
    """The prepared repository over http on a free port of 127.0.0.1, for the block."""
    require((DATA / "READY").exists(), f"the local apt repository prepared in {DATA} (.ci/setup)")
    server = serve(_RepoHandler, repo=DATA / "repo", requests=[])
    try:
        yield AptRepo(server)
    finally:
        shut_down(server)
