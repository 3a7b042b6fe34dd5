"""Builds with a real registry (Debian's docker-registry on 127.0.0.1): FROM pulls, --push, and
the build cache shared through the registry (--cache-to / --cache-from type=registry)."""
from __future__ import annotations

import hashlib
import json
import random
import re
import subprocess
import uuid
from pathlib import Path

import pytest

from layers.image import OCI_INDEX, dumps, sha256_digest
from layers.platform import host_platform
from layers.reference import parse_reference
from layers.registry.mediatypes import DOCKER_MANIFEST
from layers.registry.push import push_manifest
from tests.registry_support import Registry, free_port, registry, session  # noqa: F401  (a fixture)
from tests.support import busybox_base, docker, docker_available, pybuild, require
from tests.test_cache import steps
from tests.test_trace import tracks

APP = """\
FROM {base}
COPY app.txt /app.txt
RUN cat /app.txt > /copy && echo ran > /ran
CMD ["cat", "/copy"]
"""


@pytest.fixture
def project(tmp_path: Path, registry: Registry):  # noqa: F811
    """A registry holding a base image pushed by pybuild, and a project built FROM it."""
    archive = busybox_base(tmp_path)
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "Dockerfile").write_text("FROM busybox:test\n")
    base = f"{registry.address}/base-{uuid.uuid4().hex[:8]}:1"
    env = {"PYBUILD_CACHE_DIR": str(tmp_path / "seed-cache")}
    assert pybuild("load", "-q", "-i", str(archive), env=env).returncode == 0
    pushed = pybuild("--push", "-t", base, str(seed), env=env)
    assert pushed.returncode == 0, pushed.stderr
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "app.txt").write_text("hello from the registry\n")
    (context / "Dockerfile").write_text(APP.format(base=base))
    return registry, base, context, tmp_path


def build(tmp_path: Path, cache: str, *args: str):
    result = pybuild("--progress", "plain", "--network", "none", *args, cwd=tmp_path,
                     env={"PYBUILD_CACHE_DIR": str(tmp_path / cache),
                          "SOURCE_DATE_EPOCH": "1700000000"})
    assert result.returncode == 0, result.stderr
    return result.stderr


def test_from_a_registry_push_the_result_and_docker_runs_it(project) -> None:
    registry, base, context, tmp_path = project
    app = f"{registry.address}/app-{uuid.uuid4().hex[:8]}:1"
    trace = tmp_path / "trace.json"
    log = build(tmp_path, "runner", "--push", "-t", app, "--trace", str(trace), str(context))
    assert f"pushing {app}" in log
    assert not (tmp_path / "image.tar").exists()  # --push alone writes no tarball
    timeline = tracks(trace)
    assert [e["name"] for e in timeline["pulls"]] == [f"pulling {base}"]
    assert [e["name"] for e in timeline["pushes"]] == [f"pushing {app}"]
    # The base's layers were unpacked as they were pulled, each a span within the pull's; the
    # COPY's layer, which the RUN reads, was unpacked as it was written: no unpack step after.
    (pull,) = timeline["pulls"]
    unpacks = [e for track in timeline.values() for e in track if e["cat"] == "unpacks"]
    pulled = [e for e in unpacks if e["ts"] + e["dur"] <= pull["ts"] + pull["dur"]]
    assert len(pulled) == int(re.search(r"(\d+) layers", pull["args"]["info"][0])[1])
    for span in pulled:
        assert span["name"].startswith("unpacking sha256:") and span["ts"] >= pull["ts"]
        assert int(span["args"]["info"][0].split()[0].replace(",", "")) > 100, "busybox's files"
    assert [e for e in unpacks if e not in pulled] == []

    inspected = subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{app}"],
                               capture_output=True, text=True)
    require(inspected.returncode != 127, "skopeo")
    assert inspected.returncode == 0, inspected.stderr
    assert len(json.loads(inspected.stdout)["Layers"]) == 3

    require(docker_available(), "a Docker engine")
    try:
        docker("pull", app)
        ran = docker("run", "--rm", "--network", "none", app)
        assert ran.stdout == b"hello from the registry\n"
    finally:
        docker("rmi", "-f", app, check=False)


def test_the_cache_travels_through_the_registry(project) -> None:
    registry, base, context, tmp_path = project
    cache_ref = f"{registry.address}/cache-{uuid.uuid4().hex[:8]}:main"
    first = build(tmp_path, "one", "-o", str(tmp_path / "one.tar"), "--iidfile",
                  str(tmp_path / "one.iid"), "--cache-to", f"type=registry,ref={cache_ref}",
                  str(context))
    assert steps(first) == ["no earlier build", "no earlier build"]
    second = build(tmp_path, "two", "-o", str(tmp_path / "two.tar"), "--iidfile",
                   str(tmp_path / "two.iid"), "--cache-from", cache_ref, str(context))
    assert steps(second) == ["CACHED", "CACHED"]
    assert (tmp_path / "one.iid").read_text() == (tmp_path / "two.iid").read_text()


def test_an_unreachable_registry_and_an_empty_store_name_both(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    (tmp_path / "Dockerfile").write_text(f"FROM 127.0.0.1:{port}/nosuch:1\n")
    result = pybuild("-o", str(tmp_path / "image.tar"), str(tmp_path),
                     env={"PYBUILD_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 1
    assert f"cannot pull 127.0.0.1:{port}/nosuch:1" in result.stderr
    assert f"the local image store ({tmp_path / 'cache' / 'images'}) has no copy" in result.stderr
    assert not (tmp_path / "image.tar").exists()


def test_pull_falls_back_to_the_store_when_the_registry_is_gone(project) -> None:
    registry, base, context, tmp_path = project
    build(tmp_path, "runner", "-o", str(tmp_path / "a.tar"), str(context))
    registry.stop()
    log = build(tmp_path, "runner", "--pull", "-o", str(tmp_path / "b.tar"), str(context))
    assert f"cannot pull {base}" in log and "using the copy in the local image store" in log
    assert steps(log) == ["CACHED", "CACHED"]


def test_a_missing_image_names_the_reference_and_the_registry(project) -> None:
    registry, base, context, tmp_path = project
    (context / "Dockerfile").write_text(f"FROM {registry.address}/nothing-here:1\n")
    result = pybuild("-o", str(tmp_path / "x.tar"), str(context),
                     env={"PYBUILD_CACHE_DIR": str(tmp_path / "empty")})
    assert result.returncode == 1
    assert f"{registry.address}/nothing-here:1" in result.stderr
    assert f"the registry {registry.address} has no such image" in result.stderr
    assert not (tmp_path / "x.tar").exists()


def test_from_an_index_builds_on_the_host_platform_image(project) -> None:
    registry, base, context, tmp_path = project
    other = tmp_path / "other"
    other.mkdir()
    (other / "Dockerfile").write_text(f"FROM {base}\nRUN echo other > /other\n")
    repository = f"{registry.address}/multi-{uuid.uuid4().hex[:8]}"
    digests = {}
    for name, directory in (("host", tmp_path / "seed"), ("other", other)):
        log = build(tmp_path, "seed-cache", "--push", "--provenance=false", "-t",
                    f"{repository}:{name}", str(directory))
        digests[name] = re.search(rf"{re.escape(repository)}:{name}@(sha256:[0-9a-f]+)", log)[1]
    host = host_platform()
    foreign = "arm64" if host.architecture != "arm64" else "amd64"

    def entry(name: str, architecture: str) -> dict:
        size = len(subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                                   f"docker://{repository}@{digests[name]}"],
                                  capture_output=True, check=True).stdout)
        return {"mediaType": DOCKER_MANIFEST, "digest": digests[name], "size": size,
                "platform": {"os": "linux", "architecture": architecture}}
    index = dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                   "manifests": [entry("other", foreign), entry("host", host.architecture)]})
    push_manifest(session(registry.address), parse_reference(f"{repository}:multi"), index,
                  OCI_INDEX)
    (context / "Dockerfile").write_text(f"FROM {repository}:multi\nRUN test ! -e /other\n")
    log = build(tmp_path, "fresh", "-o", str(tmp_path / "m.tar"), str(context))
    assert steps(log) == ["no earlier build"]


def test_pybuild_push_sends_an_image_of_the_store(project) -> None:
    registry, base, context, tmp_path = project
    target = f"{registry.address}/pushed-{uuid.uuid4().hex[:8]}:2"
    env = {"PYBUILD_CACHE_DIR": str(tmp_path / "store")}
    assert pybuild("-t", target, "-o", str(tmp_path / "s.tar"), str(context), env=env).returncode == 0
    missing = pybuild("push", f"{registry.address}/never-built:1", env=env)
    assert missing.returncode == 1 and "no such image in the local image store" in missing.stderr
    pushed = pybuild("push", "--compression", "zstd", target, env=env)
    assert pushed.returncode == 0, pushed.stderr
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{target}"],
                         capture_output=True, check=True).stdout
    manifest = json.loads(raw)
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert {layer["mediaType"] for layer in manifest["layers"]} == {
        "application/vnd.oci.image.layer.v1.tar+zstd"}
    assert pushed.stdout.decode() == f"{target}: digest: {sha256_digest(raw)}\n"


def test_a_large_layer_pushed_gzip_is_pulled_and_run_by_docker_and_pushes_the_same_blob(
        tmp_path: Path, registry: Registry) -> None:  # noqa: F811
    """A layer of many compression blocks, text and noise (spans stored, not deflated; small
    files of both side by side), streamed to the registry while it is compressed: Docker pulls
    it and reads every file back, pybuild pulls it into an empty cache (each layer checked
    against its diff ID), and another runner pushing the same build sends a blob of the same
    digest."""
    archive = busybox_base(tmp_path)
    context = tmp_path / "ctx"
    context.mkdir()
    rnd = random.Random(16)
    text = b"".join(rnd.choice([b"push ", b"gzip ", b"layer ", b"\n"]) for _ in range(600_000))
    files = {f"text{n}.txt": text[n * 7919:] for n in range(4)}
    files.update({f"noise{n}.bin": rnd.randbytes(1_500_000 + n) for n in range(4)})
    files.update({f"small{n:03d}": rnd.randbytes(size) if n % 2 else text[n:n + size]
                  for n in range(300) for size in [rnd.randint(100, 12_000)]})
    for name, content in files.items():
        (context / name).write_bytes(content)
    (context / "Dockerfile").write_text(
        "FROM busybox:test\nCOPY . /data\nCMD [\"sh\", \"-c\", \"cd /data && sha256sum *\"]\n")
    pushed = {}
    for runner in ("one", "two"):
        target = f"{registry.address}/large-{runner}:1"
        env = {"PYBUILD_CACHE_DIR": str(tmp_path / runner), "SOURCE_DATE_EPOCH": "1700000000"}
        assert pybuild("load", "-q", "-i", str(archive), env=env).returncode == 0
        result = pybuild("--network", "none", "--push", "--provenance=false", "-t", target,
                         str(context), env=env)
        assert result.returncode == 0, result.stderr
        raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                              f"docker://{target}"], capture_output=True, check=True).stdout
        pushed[runner] = [layer["digest"] for layer in json.loads(raw)["layers"]]
    assert pushed["one"] == pushed["two"]

    require(docker_available(), "a Docker engine")
    target = f"{registry.address}/large-one:1"
    try:
        docker("pull", target)
        ran = docker("run", "--rm", "--network", "none", target).stdout.decode()
    finally:
        docker("rmi", "-f", target, check=False)
    expected = {f"{hashlib.sha256(content).hexdigest()}  {name}"
                for name, content in files.items()}
    assert expected <= set(ran.splitlines())

    (tmp_path / "from").mkdir()
    (tmp_path / "from" / "Dockerfile").write_text(f"FROM {target}\n")
    pulled = pybuild("-o", str(tmp_path / "pulled.tar"), str(tmp_path / "from"),
                     env={"PYBUILD_CACHE_DIR": str(tmp_path / "three")})
    assert pulled.returncode == 0, pulled.stderr
