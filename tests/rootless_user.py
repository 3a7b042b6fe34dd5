"""A user made for a test, to build as without privileges (rootless), and what it needs: pybuild
and its dependencies where it can read them, the base image, a home it owns, and subordinate ids
on request; /etc/subuid and /etc/subgid come back byte for byte afterwards."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support import ROOT, require

EPOCH = "1700000000"
SUBID_FILES = ("/etc/subuid", "/etc/subgid")


class User:
    """A user made for the test, a workspace it can read (pybuild and its dependencies, the base
    image, the context) and a home it owns; /etc/subuid and /etc/subgid come back byte for byte."""

    def __init__(self, base: Path) -> None:
        self.saved = {path: Path(path).read_bytes() if os.path.exists(path) else None
                      for path in SUBID_FILES}
        self.name = f"pbiso{uuid.uuid4().hex[:8]}"
        self.work = Path(tempfile.mkdtemp(prefix="pybuild-rootless-"))
        os.chmod(self.work, 0o755)
        lib = self.work / "lib"
        for package in ("builder", "grammar", "layers"):
            shutil.copytree(ROOT / package, lib / package,
                            ignore=shutil.ignore_patterns("__pycache__"))
        import lark
        import zstandard
        for module in (lark, zstandard):
            shutil.copytree(Path(module.__file__).parent, lib / module.__name__)
        shutil.copy(base, self.work / "base.tar")
        subprocess.run(["chmod", "-R", "a+rX", str(self.work)], check=True)
        self.home = self.work / "home"
        self.home.mkdir(mode=0o700)
        subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", self.name],
                       check=True, capture_output=True)
        shutil.chown(self.home, self.name, self.name)
        self.output: Path | None = None
        self.python = next((p for p in (sys.executable, f"/usr/bin/python3.{sys.version_info[1]}")
                            if self.runs(p)), None)

    def runs(self, python: str) -> bool:
        check = f"import sys; assert sys.version_info[:2] == {tuple(sys.version_info[:2])}"
        return subprocess.run(["runuser", "-u", self.name, "--", python, "-c", check],
                              capture_output=True).returncode == 0

    def grant(self, ranges: bool) -> None:
        """Subordinate ids for the user in /etc/subuid and /etc/subgid, or none."""
        for path in SUBID_FILES:
            lines = [line for line in (self.saved[path] or b"").decode().splitlines()
                     if line and not line.startswith(f"{self.name}:")]
            end = max([int(f[1]) + int(f[2]) for f in (line.split(":") for line in lines)
                       if len(f) == 3 and f[1].isdigit() and f[2].isdigit()] + [100000])
            if ranges:
                lines.append(f"{self.name}:{end}:65536")
            Path(path).write_text("".join(line + "\n" for line in lines))

    def pybuild(self, cache: Path, *args: str) -> subprocess.CompletedProcess:
        env = [f"HOME={self.home}", f"PYTHONPATH={self.work / 'lib'}",
               f"PYBUILD_CACHE_DIR={cache}", f"SOURCE_DATE_EPOCH={EPOCH}"]
        return subprocess.run(["runuser", "-u", self.name, "--", "env", *env, self.python, "-m",
                               "builder.cli", *args], cwd=self.work, capture_output=True,
                              text=True, timeout=300)

    def build(self, dockerfile: str, files: dict[str, bytes] | None = None,
              options: tuple[str, ...] = ()) -> tuple[subprocess.CompletedProcess, str]:
        """A build with a cache of its own, of a context holding `dockerfile` and `files`, with
        the command-line `options`; returns the process and the image ID (the tarball is
        `self.output`)."""
        build = uuid.uuid4().hex[:6]
        context = self.work / f"context-{build}"
        context.mkdir()
        for name, content in {"Dockerfile": dockerfile.encode(), **(files or {})}.items():
            (context / name).write_bytes(content)
            os.chmod(context / name, 0o644)
        os.chmod(context, 0o755)
        cache = self.home / f"cache-{build}"
        loaded = self.pybuild(cache, "load", "-i", str(self.work / "base.tar"))
        assert loaded.returncode == 0, loaded.stderr
        iid = self.home / f"{build}.iid"
        self.output = self.home / f"{build}.tar"
        result = self.pybuild(cache, "--iidfile", str(iid), "-o", str(self.output), *options,
                              str(context))
        return result, iid.read_text() if result.returncode == 0 else ""

    def remove(self) -> None:
        subprocess.run(["userdel", self.name], capture_output=True)
        for path, content in self.saved.items():
            if content is None:
                Path(path).unlink(missing_ok=True)
            else:
                Path(path).write_bytes(content)
        shutil.rmtree(self.work, ignore_errors=True)


@contextmanager
def rootless_user(base: Path) -> Iterator[User]:
    """A User for the length of the block; requires root and the tools to make one."""
    require(os.geteuid() == 0, "root, to create a test user")
    for tool in ("useradd", "userdel", "runuser", "newuidmap", "newgidmap"):
        require(shutil.which(tool) is not None, f"{tool} (packages passwd, util-linux, uidmap)")
    made = User(base)
    try:
        require(made.python is not None, f"a Python {sys.version_info[0]}.{sys.version_info[1]} "
                                         f"that user {made.name} can run")
        yield made
    finally:
        made.remove()
