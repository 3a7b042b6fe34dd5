"""COPY --from=NAME where NAME is no stage of the Dockerfile: an image (of the local store, of a
registry, or of a --build-context archive or OCI layout), or a directory --build-context. Built
end to end with the CLI; the files are read back from the tarball, and compared with what real
Docker makes of the same Dockerfile."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import pytest

from layers.blobstore import BlobStore
from layers.image import sha256_digest
from tests.registry_support import Registry, registry  # noqa: F401  (a fixture)
from tests.sample_images import make_image, write_tarball
from tests.conformance import Options, load_cases, run_corpus
from tests.support import ROOT, docker, docker_available, pybuild, require
from tests.test_cache import steps

BUSYBOX_RECIPE = ROOT / "testdata" / "images" / "busybox" / "make.py"


@pytest.fixture(scope="module")
def busybox_tar(tmp_path_factory) -> Path:
    """busybox:test, made offline; COPY needs no sandbox, so neither does this."""
    archive = tmp_path_factory.mktemp("busybox") / "busybox.tar"
    subprocess.run([sys.executable, str(BUSYBOX_RECIPE), str(archive), "--tag", "busybox:test"],
                   check=True)
    return archive


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def build(context: Path, cache: Path, *args: str, dockerfile: str | None = None,
          ok: bool = True):
    """Build `context` (with `dockerfile` written into it first); the plain log, or the result
    when `ok` is False."""
    if dockerfile is not None:
        (context / "Dockerfile").write_text(dockerfile)
    result = pybuild("--progress", "plain", "-o", str(context.parent / "image.tar"), *args,
                     str(context), env={"PYBUILD_CACHE_DIR": str(cache),
                                        "SOURCE_DATE_EPOCH": "1700000000"})
    if not ok:
        return result
    assert result.returncode == 0, result.stderr
    return result.stderr


def image_files(tarball: Path) -> dict[str, tuple[tarfile.TarInfo, bytes | None]]:
    """The image's filesystem, its layers applied in order (no whiteouts: COPY makes none)."""
    files: dict[str, tuple[tarfile.TarInfo, bytes | None]] = {}
    with tarfile.open(tarball) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))[0]
        for layer in manifest["Layers"]:
            with tarfile.open(fileobj=outer.extractfile(layer)) as inner:
                for member in inner.getmembers():
                    data = inner.extractfile(member).read() if member.isfile() else None
                    files[member.name.rstrip("/")] = (member, data)
    return files


def small_image(tmp_path: Path, files: dict[str, bytes], tag: str, name: str) -> Path:
    """An image of one layer holding `files`, as a docker-save/OCI tarball tagged `tag`."""
    blobs = BlobStore(str(tmp_path / f"blobs-{name}"))
    archive = tmp_path / f"{name}.tar"
    write_tarball(archive, blobs, make_image(blobs, files, cmd=name), (tag,))
    return archive


def image_id(archive: Path) -> str:
    with tarfile.open(archive) as tar:
        config = json.load(tar.extractfile("manifest.json"))[0]["Config"]
        return sha256_digest(tar.extractfile(config).read())


@pytest.fixture
def context(tmp_path: Path) -> Path:
    directory = tmp_path / "ctx"
    directory.mkdir()
    return directory


def test_copy_from_an_image_of_the_local_store(context, cache, busybox_tar) -> None:
    assert pybuild("load", "-i", str(busybox_tar), env={"PYBUILD_CACHE_DIR": str(cache)}
                   ).returncode == 0
    log = build(context, cache, dockerfile="""\
FROM scratch
COPY --from=busybox:test /bin/busybox /linuxrc /tools/
COPY --from=docker.io/library/busybox:test /home /copied-home
COPY --from=busybox:test --chown=7:8 --chmod=700 /etc/pass* /owned/
COPY --from=busybox:test /bin/ /allbin/
""")
    assert "from the local image store" in log and ": busybox:test" in log
    base = image_files(busybox_tar)
    files = image_files(context.parent / "image.tar")
    busybox = base["bin/busybox"][1]
    assert files["tools/busybox"][1] == busybox
    assert files["tools/busybox"][0].mode == 0o755
    assert files["tools/linuxrc"][0].isfile(), "a symlink named as the source is followed"
    assert files["tools/linuxrc"][1] == busybox
    home = files["copied-home/app"][0]
    assert home.isdir() and (home.uid, home.gid) == (1000, 1000), "owners are kept"
    owned = files["owned/passwd"][0]
    assert (owned.uid, owned.gid, owned.mode) == (7, 8, 0o700)
    assert files["owned/passwd"][1] == base["etc/passwd"][1]
    assert files["allbin/ls"][0].issym() and files["allbin/ls"][0].linkname == "/bin/busybox"
    assert {n for n in files if n.startswith("allbin/")} == {
        "allbin/" + n[len("bin/"):] for n in base if n.startswith("bin/")}


def test_image_build_contexts_archive_and_oci_layout(tmp_path, context, cache) -> None:
    archive = small_image(tmp_path, {"etc/hello": b"hello from the archive\n"}, "tools:1", "tools")
    layout_tar = small_image(tmp_path, {"opt/tool/run": b"#!/bin/sh\n"}, "layout:2", "layout")
    layout = tmp_path / "layout"
    with tarfile.open(layout_tar) as tar:
        tar.extractall(layout)
    (context / "a.txt").write_text("the stage's file\n")
    log = build(context, cache, "--build-context", f"tools=docker-archive:{archive}",
                "--build-context", f"lay=oci-layout://{layout}:layout:2", dockerfile="""\
FROM scratch AS tools
COPY a.txt /etc/hello
FROM scratch
COPY --from=tools /etc/hello /hello
COPY --from=lay /opt/ /opt/
""")
    files = image_files(context.parent / "image.tar")
    # As buildx documents it: a build context named like a stage overrides that stage.
    assert files["hello"][1] == b"hello from the archive\n"
    assert "[tools" not in log, "the overridden stage is not built"
    assert files["opt/tool/run"][1] == b"#!/bin/sh\n"
    assert f"from --build-context tools=docker-archive:{archive}" in log


def test_copy_from_a_directory_build_context(tmp_path, context, cache) -> None:
    shared = tmp_path / "shared"
    (shared / "sub").mkdir(parents=True)
    (shared / "a.txt").write_text("a\n")
    (shared / "sub" / "b.txt").write_text("b\n")
    os.chmod(shared / "sub" / "b.txt", 0o600)
    (shared / "secret.key").write_text("key\n")
    (shared / ".dockerignore").write_text("*.key\n")
    (tmp_path / "outside.txt").write_text("outside\n")
    (shared / "escape").symlink_to("../outside.txt")
    if os.geteuid() == 0:
        os.chown(shared / "a.txt", 1234, 1234)
    # The main context's .dockerignore is not the named context's (BuildKit reads each
    # context's own).
    (context / ".dockerignore").write_text("*.txt\n")
    dockerfile = """\
FROM scratch
COPY --from=shared . /shared/
COPY --from=shared --chown=5:6 a.txt /owned.txt
"""
    args = ("--build-context", f"shared={shared}")
    build(context, cache, *args, dockerfile=dockerfile)
    files = image_files(context.parent / "image.tar")
    assert files["shared/a.txt"][1] == b"a\n"
    assert (files["shared/a.txt"][0].uid, files["shared/a.txt"][0].gid) == (0, 0), \
        "a directory's files are root's, as the main context's"
    assert files["shared/sub/b.txt"][0].mode == 0o600
    assert "shared/secret.key" not in files, "its own .dockerignore applies"
    assert "shared/.dockerignore" in files
    owned = files["owned.txt"][0]
    assert (owned.uid, owned.gid) == (5, 6)

    assert steps(build(context, cache, *args)) == ["CACHED", "CACHED"]
    (shared / "sub" / "b.txt").write_text("b, changed\n")
    assert steps(build(context, cache, *args)) == ["sub/b.txt changed", "an earlier step changed"]
    assert image_files(context.parent / "image.tar")["shared/sub/b.txt"][1] == b"b, changed\n"

    for source, message in (
            ("../outside.txt", "source '../outside.txt' is outside the build context shared"),
            ("escape", "source 'escape' is a symlink out of the build context shared"),
            ("secret.key", "'secret.key': not found in the build context shared")):
        failed = build(context, cache, *args, ok=False,
                       dockerfile=f"FROM scratch\nCOPY --from=shared {source} /x\n")
        assert failed.returncode == 1, failed.stderr
        assert f"Dockerfile:2: {message}" in failed.stderr
    failed = build(context, cache, "--build-context", f"shared={tmp_path / 'nowhere'}", ok=False,
                   dockerfile="FROM scratch\nCOPY --from=shared a.txt /x\n")
    assert failed.returncode == 1 and "is not a directory" in failed.stderr, failed.stderr


@pytest.mark.parametrize("where", ["store", "archive"])
def test_a_changed_source_image_invalidates_the_copy(tmp_path, context, cache, where) -> None:
    first = small_image(tmp_path, {"etc/hello": b"one\n"}, "tools:1", "one")
    second = small_image(tmp_path, {"etc/hello": b"two\n"}, "tools:1", "two")
    archive = tmp_path / "tools.tar"
    args: tuple[str, ...] = ()
    name = "tools:1"

    def provide(image: Path) -> None:
        if where == "store":
            loaded = pybuild("load", "-i", str(image), env={"PYBUILD_CACHE_DIR": str(cache)})
            assert loaded.returncode == 0, loaded.stderr
        else:
            archive.write_bytes(image.read_bytes())

    if where == "archive":
        args, name = ("--build-context", f"tools=docker-archive:{archive}"), "tools"
    dockerfile = f"FROM scratch\nCOPY --from={name} /etc/hello /hello\nCOPY a.txt /a.txt\n"
    (context / "a.txt").write_text("a\n")
    provide(first)
    assert steps(build(context, cache, *args, dockerfile=dockerfile)) == [
        "no earlier build", "no earlier build"]
    assert image_files(context.parent / "image.tar")["hello"][1] == b"one\n"
    assert steps(build(context, cache, *args)) == ["CACHED", "CACHED"]
    provide(second)
    assert steps(build(context, cache, *args)) == [
        f"from image {name} now {image_id(second)}", "an earlier step changed"]
    assert image_files(context.parent / "image.tar")["hello"][1] == b"two\n"
    provide(first)
    assert steps(build(context, cache, *args)) == ["CACHED", "CACHED"]
    assert image_files(context.parent / "image.tar")["hello"][1] == b"one\n"


def test_an_image_of_a_registry_is_pulled_once(tmp_path, context, registry) -> None:  # noqa: F811
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "hello").write_text("hello from the registry\n")
    tools = f"{registry.address}/tools-{uuid.uuid4().hex[:8]}:1"
    (seed / "Dockerfile").write_text("FROM scratch\nCOPY hello /hello\n")

    def push() -> str:
        pushed = pybuild("--push", "-t", tools, "--iidfile", str(seed / "iid"), str(seed),
                         env={"PYBUILD_CACHE_DIR": str(tmp_path / "seed-cache")})
        assert pushed.returncode == 0, pushed.stderr
        return (seed / "iid").read_text()

    push()
    cache = tmp_path / "cache"
    dockerfile = f"FROM scratch\nCOPY --from={tools} /hello /copied\n"
    log = build(context, cache, dockerfile=dockerfile)
    assert f"pulling {tools}" in log
    assert image_files(context.parent / "image.tar")["copied"][1] == b"hello from the registry\n"
    again = build(context, cache)
    assert f"pulling {tools}" not in again and steps(again) == ["CACHED"]

    (seed / "hello").write_text("hello again\n")
    second = push()
    assert steps(build(context, cache)) == ["CACHED"], "the store's copy, without --pull"
    pulled = build(context, cache, "--pull")
    assert f"pulling {tools}" in pulled
    assert steps(pulled) == [f"from image {tools} now {second}"]
    assert image_files(context.parent / "image.tar")["copied"][1] == b"hello again\n"

    missing = f"{registry.address}/missing-{uuid.uuid4().hex[:8]}:1"
    failed = build(context, cache, ok=False, dockerfile=f"FROM scratch\nCOPY --from={missing} "
                                                       "/hello /copied\n")
    assert failed.returncode == 1, failed.stderr
    assert f"Dockerfile:2: image '{missing}' of COPY --from not found: no stage or " \
           f"--build-context is named {missing}" in failed.stderr
    assert f"the local image store ({cache / 'images'}) has no {missing}" in failed.stderr
    assert f"and the registry {registry.address} has no such image" in failed.stderr


def test_names_that_are_no_image(context, cache) -> None:
    stages = "FROM scratch AS builder\nCOPY Dockerfile /f\nFROM scratch AS main\n"
    for line, status, message in (
            ("COPY --from=Bulider /f /f", 1, "COPY --from=Bulider: invalid reference"),
            ("COPY --from=5 /f /f", 1, "COPY --from=5: invalid stage index"),
            ("COPY --from=main /f /f", 1,
             "COPY --from=main: circular dependency detected on stage main")):
        failed = build(context, cache, "--target", "main", ok=False,
                       dockerfile=stages + line + "\n")
        assert failed.returncode == status, failed.stderr
        assert f"Dockerfile:4: {message}" in failed.stderr, failed.stderr
        if "Bulider" in line:
            assert "(did you mean the stage builder?)" in failed.stderr


def test_matches_docker(request, tmp_path, busybox_tar) -> None:
    """The same Dockerfiles built by Docker (which copies from the busybox:test it has loaded,
    offline) and by pybuild: configs and exported filesystems compared entry by entry by the
    conformance harness. A symlink named as a source, or matched by a wildcard, is followed and
    keeps its own name, from an image as from the context."""
    require(docker_available(), "a running Docker engine")
    docker("load", "-i", str(busybox_tar))
    request.addfinalizer(lambda: docker("rmi", "busybox:test", check=False))
    cache = tmp_path / "cache"
    assert pybuild("load", "-i", str(busybox_tar), env={"PYBUILD_CACHE_DIR": str(cache)}
                   ).returncode == 0
    cases = tmp_path / "cases"
    for name, expect, dockerfile, setup in (
            ("01-copy-from-image", "ok", """\
FROM scratch
COPY --from=busybox:test /bin/busybox /linuxrc /tools/
COPY --from=busybox:test /home /copied-home
COPY --from=busybox:test /etc/ /bin/c* /mixed/
COPY --from=busybox:test --chown=7:8 --chmod=700 /etc/passwd /owned
COPY --from=busybox:test /bin/ /allbin/
""", ""),
            ("02-copy-symlink-sources", "ok", """\
FROM scratch
COPY *.txt /globbed/
COPY link.txt /named/
COPY dirl* /dir-globbed/
COPY dirlink /dir-named/
""", "echo a > a.txt && mkdir d && echo in > d/in.txt && ln -s a.txt link.txt && "
     "ln -s d dirlink\n"),
            ("03-error-glob-matches-a-dangling-symlink", "error", "FROM scratch\nCOPY *.md /m/\n",
             "ln -s nowhere dangling.md\n")):
        case = cases / name
        case.mkdir(parents=True)
        meta = {"expect": expect} | ({"error_line": 2} if expect == "error" else {})
        (case / "case.json").write_text(json.dumps(meta))
        (case / "Dockerfile").write_text(dockerfile)
        if setup:
            (case / "setup.sh").write_text(setup)
    candidate = (f"{sys.executable} -m builder.cli -f {{dockerfile}} -t {{tag}} -o {{out}} "
                 "{context}")
    run = run_corpus(load_cases(cases), Options(
        candidate=candidate, env={"PYBUILD_CACHE_DIR": str(cache)}, cwd=str(ROOT),
        work_root=tmp_path / "work", cache=tmp_path / "reference"))
    assert len(run.results) == 3
    for result in run.results:
        assert result.verdict.status == "PASS", \
            result.case.name + ": " + "\n".join(result.verdict.differences)
