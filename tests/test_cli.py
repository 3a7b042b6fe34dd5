"""End to end through the CLI and real Docker: the shipped example, outputs, failures."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest

from tests.support import ROOT, DockerImages, docker, pybuild, require

HELLO = ROOT / "testdata" / "hello"


@pytest.fixture
def cache(tmp_path: Path) -> dict:
    return {"PYBUILD_CACHE_DIR": str(tmp_path / "cache")}


def test_hello_loads_and_runs(images: DockerImages, tmp_path: Path, cache: dict) -> None:
    name = images.name("pybuild-hello")
    out = tmp_path / "hello.tar"
    result = pybuild("-t", name, "-o", str(out), str(HELLO), env=cache)
    assert result.returncode == 0, result.stderr
    assert f"Loaded image: {name.removesuffix(':latest')}" in images.load(out)
    run = images.run(name)
    assert run.returncode == 0
    assert run.stdout == b"Hello from pybuild! This image was built without a daemon.\n"
    config = images.inspect(name)["Config"]
    assert config["Entrypoint"] == ["/usr/local/bin/hello"]
    assert config["WorkingDir"] == "/work"
    assert config["Labels"]["org.opencontainers.image.version"] == "1.0"


def test_output_to_stdout_pipes_into_docker_load(images: DockerImages, cache: dict) -> None:
    name = images.name("pybuild-stdout")
    result = pybuild("-t", name, "-o", "-", "--build-arg", "VERSION=2.5", str(HELLO), env=cache)
    assert result.returncode == 0, result.stderr
    docker("load", input=result.stdout)
    assert images.inspect(name)["Config"]["Labels"]["org.opencontainers.image.version"] == "2.5"


def _layer_media_types(tarball: Path) -> set[str]:
    with tarfile.open(tarball) as archive:
        index = json.load(archive.extractfile("index.json"))
        manifest_digest = index["manifests"][0]["digest"].split(":")[1]
        manifest = json.load(archive.extractfile(f"blobs/sha256/{manifest_digest}"))
    return {layer["mediaType"] for layer in manifest["layers"]}


def test_gzip_tarball_loads(images: DockerImages, tmp_path: Path, cache: dict) -> None:
    name = images.name("pybuild-gzip")
    out = tmp_path / "image.tar"
    result = pybuild("-t", name, "-o", str(out), "--compression", "gzip", str(HELLO), env=cache)
    assert result.returncode == 0, result.stderr
    assert _layer_media_types(out) == {"application/vnd.oci.image.layer.v1.tar+gzip"}
    images.load(out)
    assert images.run(name).returncode == 0


def test_zstd_tarball_is_a_valid_oci_archive(tmp_path: Path, cache: dict) -> None:
    """Docker reads zstd layers only from 23.0 (this machine's 20.10 refuses them), so the zstd
    output is checked by skopeo, which verifies every blob digest while copying."""
    require(shutil.which("skopeo") is not None, "skopeo")
    out = tmp_path / "image.tar"
    result = pybuild("-o", str(out), "--compression", "zstd", str(HELLO), env=cache)
    assert result.returncode == 0, result.stderr
    assert _layer_media_types(out) == {"application/vnd.oci.image.layer.v1.tar+zstd"}
    copy = subprocess.run(["skopeo", "copy", f"oci-archive:{out}", f"dir:{tmp_path / 'copy'}"],
                          capture_output=True, text=True)
    assert copy.returncode == 0, copy.stderr


def test_a_zstd_tarball_warns_that_older_docker_cannot_load_it(tmp_path: Path, cache: dict) -> None:
    warning = ("WARNING: zstd layers need Docker 23.0 or newer to load (docker load of Docker "
               "20.10 refuses them)\n")
    for compression in ("zstd", "gzip"):
        result = pybuild("--progress", "plain", "-o", str(tmp_path / f"{compression}.tar"),
                         "--compression", compression, str(HELLO), env=cache)
        assert result.returncode == 0, result.stderr
        assert result.stderr.count(warning) == (compression == "zstd"), result.stderr


def test_skopeo_reads_the_oci_view(tmp_path: Path, cache: dict) -> None:
    require(shutil.which("skopeo") is not None, "skopeo")
    out = tmp_path / "image.tar"
    assert pybuild("-t", "skopeo-check:1", "-o", str(out), str(HELLO), env=cache).returncode == 0
    inspect = subprocess.run(["skopeo", "inspect", f"oci-archive:{out}"], capture_output=True, text=True)
    assert inspect.returncode == 0, inspect.stderr
    data = json.loads(inspect.stdout)
    assert data["Labels"]["org.opencontainers.image.title"] == "pybuild hello"
    assert len(data["Layers"]) == 3


def test_failed_build_leaves_no_output(tmp_path: Path, cache: dict) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM scratch\nCOPY missing.txt /\n")
    out = tmp_path / "image.tar"
    result = pybuild("-o", str(out), str(context), env=cache)
    assert result.returncode == 1
    assert "Dockerfile:2" in result.stderr and "missing.txt" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".image.tar")] == []


def test_dockerfile_from_stdin(tmp_path: Path, cache: dict) -> None:
    (tmp_path / "a.txt").write_text("a")
    out = tmp_path / "image.tar"
    result = pybuild("-f", "-", "-o", str(out), str(tmp_path), env=cache,
                     input=b"FROM scratch\nCOPY a.txt /\n")
    assert result.returncode == 0, result.stderr
    with tarfile.open(out) as archive:
        assert "manifest.json" in archive.getnames()


def test_an_output_that_is_not_a_regular_file_is_written_to_not_replaced(tmp_path) -> None:
    """`-o /dev/null` must leave the device in place (a rename over it would replace it with a
    file, for everyone), and a FIFO's reader gets the whole archive, every time."""
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM scratch\nCOPY Dockerfile /\n")
    env = {"PYBUILD_CACHE_DIR": str(tmp_path / "cache")}
    for _ in range(2):
        assert pybuild("-q", "-o", os.devnull, str(context), env=env).returncode == 0
        assert stat.S_ISCHR(os.stat(os.devnull).st_mode)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for _ in range(2):
        received = []
        reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
        reader.start()
        assert pybuild("-q", "-o", str(fifo), str(context), env=env).returncode == 0
        reader.join(30)
        assert b"manifest.json" in received[0] and stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_options_every_verb_shares_may_come_before_the_verb(tmp_path) -> None:
    """`pybuild --cache-dir X load`, as `docker --config X build`: before or after the verb."""
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM scratch\nCOPY Dockerfile /\n")
    first, second = str(tmp_path / "first"), str(tmp_path / "second")
    archive = str(tmp_path / "app.tar")
    for args in (["--cache-dir", first, "build", "-q", "-t", "app:1", "-o", archive, str(context)],
                 ["--cache-dir", second, "load", "-q", "-i", archive],
                 ["--registry-timeout", "5", f"--cache-dir={second}", "push", "--help"]):
        result = pybuild(*args, env={"PYBUILD_CACHE_DIR": str(tmp_path / "unused")})
        assert result.returncode == 0, (args, result.stderr)
    for cache in (first, second):
        listed = pybuild("--cache-dir", cache, "images", "-q")
        assert listed.returncode == 0 and len(listed.stdout.split()) == 1, listed.stderr
    assert not (tmp_path / "unused").exists()
    wrong = pybuild("--cache-dir", first, "parse", "-f", str(context / "Dockerfile"))
    assert wrong.returncode == 2 and "unrecognized arguments: --cache-dir" in wrong.stderr
