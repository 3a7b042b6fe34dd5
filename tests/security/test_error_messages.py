"""Bad input that used to end in a raw errno, a bare exit status or silence: each is now a clear
error (naming the Dockerfile line where there is one), a non-zero exit, no traceback and no
output left behind."""
from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.rootless_user import rootless_user
from tests.support import busybox_base, pybuild

_DEEP = "d" * 90  # 44 levels: a path the RUN can make, too long once under the cache's snapshots


@dataclass(frozen=True)
class Case:
    name: str
    dockerfile: str
    message: str  # in the ERROR line
    options: tuple[str, ...] = ()
    status: int = 1
    prepare: Callable[[Path, Path], None] = lambda context, tmp: None
    base: bool = False  # needs busybox:test (and the sandbox)


def _fifo(context: Path, tmp: Path) -> None:
    os.mkfifo(context / "pipe")


def _whiteout_archive(context: Path, tmp: Path) -> None:
    with tarfile.open(context / "a.tar", "w") as archive:
        node = tarfile.TarInfo("dir/gone")
        node.type, node.devmajor, node.devminor = tarfile.CHRTYPE, 0, 0
        archive.addfile(node)
        data = tarfile.TarInfo("dir/kept")
        data.size = 3
        archive.addfile(data, io.BytesIO(b"ok\n"))


def _file(path: str) -> Callable[[Path, Path], None]:
    return lambda context, tmp: (tmp / path).write_text("a file\n")


CASES = [
    Case("deep path in COPY --from",
         "FROM busybox:test AS deep\n"
         f"RUN mkdir /d && cd /d && for i in $(seq 44); do mkdir {_DEEP} && cd {_DEEP}; done "
         "&& echo hi > f\nFROM busybox:test\nCOPY --from=deep /d /d\n",
         "Dockerfile:4: COPY: a path is too long for this system: /d/ddd", base=True),
    Case("a NUL byte in RUN", "FROM busybox:test\nRUN echo a\0b\n",
         "Dockerfile:2: RUN: the command or its environment holds a NUL byte", base=True),
    Case("COPY of a fifo", "FROM scratch\nCOPY pipe /x\n",
         "Dockerfile:2: COPY: pipe: a named pipe (FIFO) cannot be copied", prepare=_fifo),
    Case("ADD of a character device 0:0", "FROM scratch\nADD a.tar /\n",
         "Dockerfile:2: ADD: dir/gone: a character device 0:0, which overlay filesystems",
         prepare=_whiteout_archive),
    Case("-o in a missing directory", "FROM scratch\nCOPY Dockerfile /\n",
         "pybuild: -o {tmp}/nonexistent/dir/x.tar: its directory does not exist",
         options=("-o", "{tmp}/nonexistent/dir/x.tar"), status=2),
    Case("-o a directory", "FROM scratch\nCOPY Dockerfile /\n",
         "pybuild: -o {tmp}: is a directory; name the file in it (-o {tmp}/image.tar)",
         options=("-o", "{tmp}"), status=2),
    Case("--iidfile in a missing directory", "FROM scratch\nCOPY Dockerfile /\n",
         "pybuild: --iidfile {tmp}/none/id: its directory does not exist",
         options=("--iidfile", "{tmp}/none/id"), status=2),
    Case("--cache-dir a file", "FROM scratch\nCOPY Dockerfile /\n",
         "pybuild: --cache-dir {tmp}/afile: not a directory",
         options=("--cache-dir", "{tmp}/afile"), status=2, prepare=_file("afile")),
    Case("--memory past what a cgroup holds", "FROM scratch\nCOPY Dockerfile /\n",
         "pybuild: --memory 99999999999999999999g: too large",
         options=("--memory", "99999999999999999999g"), status=2),
]


@pytest.fixture(scope="module")
def base_cache(tmp_path_factory) -> Path:
    """A cache holding busybox:test, for the cases that RUN."""
    directory = tmp_path_factory.mktemp("base")
    archive = busybox_base(directory)
    cache = directory / "cache"
    assert pybuild("--cache-dir", str(cache), "load", "-q", "-i", str(archive)).returncode == 0
    return cache


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_a_clear_error(case: Case, tmp_path: Path, request) -> None:
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(case.dockerfile)
    case.prepare(context, tmp_path)
    cache = request.getfixturevalue("base_cache") if case.base else tmp_path / "cache"
    options = [option.replace("{tmp}", str(tmp_path)) for option in case.options]
    if "-o" not in options:
        options += ["-o", str(tmp_path / "image.tar")]
    if "--cache-dir" not in options:
        options += ["--cache-dir", str(cache)]
    result = pybuild("--progress", "plain", *options, str(context))
    assert result.returncode == case.status, result.stderr
    assert case.message.replace("{tmp}", str(tmp_path)) in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "[Errno" not in result.stderr
    assert not (tmp_path / "image.tar").exists()


def test_an_unreadable_context_file_names_it_and_the_line(tmp_path: Path) -> None:
    """Root reads any file whatever its mode: the build runs as a user made for the test."""
    (tmp_path / "unused-base.tar").write_bytes(b"")
    with rootless_user(tmp_path / "unused-base.tar") as user:
        context = user.work / "context"
        context.mkdir(mode=0o755)
        (context / "Dockerfile").write_text("FROM scratch\nCOPY secret /\n")
        os.chmod(context / "Dockerfile", 0o644)
        (context / "secret").write_text("hidden\n")
        os.chmod(context / "secret", 0)
        output = user.home / "image.tar"
        result = user.pybuild(user.home / "cache", "--progress", "plain", "-o", str(output),
                              str(context))
        assert result.returncode == 1, result.stderr
        assert (f"Dockerfile:2: COPY: permission denied: {context / 'secret'} (pybuild runs as "
                "uid " in result.stderr), result.stderr
        assert "Traceback" not in result.stderr and "[Errno" not in result.stderr
        assert not output.exists()
