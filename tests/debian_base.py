"""The Debian base image and the local apt repository of testdata/images/debian/make.py, for
the tests that run apt and pip: .ci/setup prepares them once per machine (debootstrap from the
Debian mirror); the tests themselves only talk to 127.0.0.1.

A missing preparation skips a developer's test and fails under CI, like any missing component.
"""
from __future__ import annotations

import functools
import importlib.util
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
BASE = "debian:test"
NO_PATH_BASE = "debian-nopath:test"  # the same root, an empty config (no Env PATH)


@functools.cache
def recipe_module():
    """The recipe as a module, for its READY check and its default directory."""
    spec = importlib.util.spec_from_file_location("debian_make", RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def data_dir() -> Path:
    return Path(recipe_module().DEFAULT_DIR)


def _prepared() -> dict:
    """What the recipe's READY says; a missing or outdated preparation skips (fails under CI)."""
    made = recipe_module().ready(str(data_dir()))
    require(made is not None, f"the Debian base prepared in {data_dir()} by the current recipe "
                              f"(as root: `{RECIPE} prepare`, which .ci/setup runs)")
    return made


def make_debian_archive(directory: Path) -> Path:
    """A docker-save archive in `directory` of BASE and NO_PATH_BASE; needs root (the root
    holds files only root may read). Tests take it from the session fixture `debian_archive`."""
    _prepared()
    require(os.geteuid() == 0, "root, to read the Debian root")
    archive = directory / "debian.tar"
    subprocess.run([sys.executable, str(RECIPE), "image", str(data_dir()), str(archive),
                    "--tag", BASE, "--imported-tag", NO_PATH_BASE], check=True)
    return archive


def prepared_debs() -> list[str]:
    """The .deb files of the local repository."""
    return _prepared()["debs"]


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
    _prepared()
    server = serve(_RepoHandler, repo=data_dir() / "repo", requests=[])
    try:
        yield AptRepo(server)
    finally:
        shut_down(server)
