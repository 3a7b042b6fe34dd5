"""Hostile build contexts: symlinks that point out of the context, a FIFO, and .dockerignore
tricks. Nothing outside the context, and nothing .dockerignore excludes, may reach an image, and
no special file may hang the build.

Docker resolves an absolute symlink inside the context root, as pybuild does; a relative one that
climbs out Docker clamps to the root, which pybuild refuses (README: Matches Docker, and where it
differs). Builds are FROM scratch: the image's one layer is read from the output tarball.
"""
from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from tests.support import pybuild

SECRET = b"SECRET-OUTSIDE"
IGNORED = b"SECRET-IGNORED"


@pytest.fixture
def context(tmp_path):
    """A context with links out of it to a secret beside it, and files .dockerignore excludes."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(SECRET)
    root = tmp_path / "context"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "keep").write_text("keep")
    (root / "sub" / "hidden").write_bytes(IGNORED)
    (root / "ignored.txt").write_bytes(IGNORED)
    (root / ".dockerignore").write_text("ignored.txt\nsub/hidden\n")
    for name, target in {"abs": outside / "secret", "absdir": outside, "rel": "../outside/secret",
                         "reldir": "../outside", "to-ignored": "ignored.txt",
                         "sublink": "sub"}.items():
        os.symlink(target, root / name)
    return root


def build(context: Path, instruction: str) -> tuple[object, dict[str, tarfile.TarInfo], bytes]:
    """Build `FROM scratch` + `instruction`; the result, and the layer's entries and bytes."""
    (context / "Dockerfile").write_text(f"FROM scratch\n{instruction}\n")
    out = context.parent / "image.tar"
    result = pybuild("-o", str(out), str(context), timeout=60,
                     env={"PYBUILD_CACHE_DIR": str(context.parent / "cache")})
    if result.returncode != 0:
        assert "Traceback" not in result.stderr and "internal error" not in result.stderr
        return result, {}, b""
    with tarfile.open(out) as image:
        layers = json.load(image.extractfile("manifest.json"))[0]["Layers"]
        if not layers:
            return result, {}, b""
        data = image.extractfile(layers[-1]).read()
    with tarfile.open(fileobj=io.BytesIO(data)) as layer:
        return result, {member.name: member for member in layer}, data


@pytest.mark.parametrize("instruction, error", [
    ("COPY abs /x", "'abs': not found in the build context"),
    ("COPY absdir/secret /x", "'absdir/secret': not found in the build context"),
    ("COPY absdir /x/", "'absdir': not found in the build context"),
    ("ADD absdir/secret /x", "'absdir/secret': not found in the build context"),
    ("COPY rel /x", "source 'rel' is a symlink out of the build context"),
    ("COPY reldir/secret /x", "source 'reldir/secret' is a symlink out of the build context"),
    ("COPY reldir/* /x/", "source 'reldir/*' is a symlink out of the build context"),
    ("COPY to-ignored /x", "'to-ignored': not found in the build context"),
    ("COPY ignored.txt /x", "'ignored.txt': not found in the build context"),
    ("COPY sublink/hidden /x", "'sublink/hidden': not found in the build context"),
])
def test_a_source_that_leads_out_of_the_context_or_to_an_excluded_file_fails(context, instruction,
                                                                              error):
    result, _, _ = build(context, instruction)
    assert result.returncode == 1, result.stderr
    assert f"Dockerfile:2: {error}" in result.stderr, result.stderr


@pytest.mark.parametrize("instruction, expected", [
    ("COPY . /x/", {"x/abs", "x/absdir", "x/rel", "x/reldir", "x/to-ignored", "x/sublink",
                    "x/sub", "x/sub/keep", "x/Dockerfile", "x/.dockerignore"}),
    ("COPY sub* /x/", {"x/keep"}),
    ("COPY sublink /x/", {"x/keep"}),
    ("COPY *.txt /x/", set()),
])
def test_what_is_copied_holds_no_secret(context, instruction, expected):
    result, entries, data = build(context, instruction)
    assert result.returncode == 0, result.stderr
    assert set(entries) - {"x"} == expected
    assert SECRET not in data and IGNORED not in data
    if instruction == "COPY . /x/":
        assert entries["x/abs"].issym() and entries["x/abs"].linkname == str(
            context.parent / "outside" / "secret")


def test_a_fifo_in_the_context_is_skipped_as_docker_skips_it(context):
    """Docker 20.10 with BuildKit leaves a FIFO out of `COPY .`; reading one would block the
    build forever. Naming one (`COPY pipe /y`, where BuildKit silently makes nothing) is an
    error: tests/security/test_error_messages.py."""
    os.mkfifo(context / "pipe")
    result, entries, _ = build(context, "COPY . /x/")
    assert result.returncode == 0, result.stderr
    assert "x/pipe" not in entries and "x/sub/keep" in entries


def test_a_fifo_dockerignore_does_not_hang_the_build(context):
    """Docker 20.10's CLI blocks reading it, SIGTERM or not; pybuild reads no special file."""
    (context / ".dockerignore").unlink()
    os.mkfifo(context / ".dockerignore")
    result, entries, _ = build(context, "COPY sub /x/")
    assert result.returncode == 0, result.stderr
    assert set(entries) == {"x", "x/keep", "x/hidden"}


@pytest.mark.parametrize("ignore, kept", [
    # patterns that climb out match nothing (as in Docker; `/../*` is cleaned to `*`, though)
    ("../outside\n../*\n", {"x/ignored.txt", "x/sub/keep", "x/sub/hidden"}),
    ("/../../*\n", set()),
    # an exception cannot re-include what lies outside, nor through a link out
    ("*\n!../outside/secret\n!reldir/secret\n", set()),
    # excluding a directory, re-including one file of it: only that file
    ("sub\n!sub/keep\n", {"x/ignored.txt", "x/sub/keep"}),
])
def test_dockerignore_tricks(context, ignore, kept):
    (context / ".dockerignore").write_text(ignore + "abs*\nrel*\nto-ignored\nsublink\n"
                                           "Dockerfile\n.dockerignore\n")
    result, entries, data = build(context, "COPY . /x/")
    assert result.returncode == 0, result.stderr
    assert {name for name, member in entries.items() if member.isfile()} == kept
    assert SECRET not in data
