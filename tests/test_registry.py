"""layers.registry against a real registry (Debian's docker-registry on 127.0.0.1): push and pull
round trips in every layer compression, indexes and platforms, digests checked, blobs skipped and
mounted, chunked uploads, and retries through a proxy that breaks things on purpose."""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess

import pytest

from layers.blobstore import BlobStore
from layers.compression import Compression
from layers.image import OCI_INDEX, OCI_MANIFEST, Descriptor, dumps, manifest_bytes, sha256_digest
from layers.platform import Platform
from layers.reference import Reference
from layers.registry.errors import RegistryError
from layers.registry.mediatypes import DOCKER_CONFIG, DOCKER_MANIFEST
from layers.registry.pull import fetch_blob, pull_layers, resolve
from layers.registry.push import push_blob, push_image, push_manifest
from layers.registry.transport import Session
from layers.registry.variants import Variant, variants
from tests.registry_support import (  # noqa: F401 (fixtures)
    EVERY_COMPRESSION,
    Proxy,
    Registry,
    SampleImage,
    free_port,
    make_image,
    proxy,
    registry,
    session,
    unique_repository,
)
from tests.support import require

AMD64 = Platform("linux", "amd64")


def _pushed(address: str, tmp_path, compressions: tuple[Compression, ...] = EVERY_COMPRESSION,
            lines: list[str] | None = None) -> tuple[Session, Reference, SampleImage, str]:
    """A small image pushed to a new repository at `address`: the session, the reference, the
    image and its manifest digest."""
    image = make_image(tmp_path / "image", compressions)
    client = session(address, lines)
    ref = Reference(address, unique_repository(), "1")
    return client, ref, image, push_image(client, ref, image.config, image.layers)


def test_an_image_in_three_compressions_pulls_back_byte_for_byte(registry, tmp_path):
    client, ref, image, digest = _pushed(registry.address, tmp_path)

    resolved = resolve(client, ref, AMD64)
    assert resolved.manifest_digest == digest == sha256_digest(resolved.manifest)
    assert resolved.media_type == OCI_MANIFEST and resolved.index_digest is None
    assert resolved.config == image.config
    assert resolved.config_digest == sha256_digest(image.config)
    assert [layer.media_type for layer in resolved.layers] == [
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.oci.image.layer.v1.tar"]
    assert [layer.digest for layer in resolved.layers] == [layer.digest for layer in image.layers]

    blobs = BlobStore(str(tmp_path / "store"))
    assert pull_layers(client, ref, resolved, blobs) == image.diff_ids
    for diff_id, tar in zip(image.diff_ids, image.tars):
        assert blobs.read_bytes(diff_id) == tar
    gzip_layer = image.layers[0]
    assert variants(blobs, image.diff_ids[0]) == (Variant(
        gzip_layer.digest, gzip_layer.size, gzip_layer.media_type,
        f"{registry.address}/{ref.repository}"),)


def test_skopeo_inspects_what_was_pushed(registry, tmp_path):
    require(shutil.which("skopeo") is not None, "skopeo")
    image = make_image(tmp_path, salt="skopeo")
    repository = unique_repository()
    digest = push_image(session(registry.address), Reference(registry.address, repository, "1"),
                        image.config, image.layers)
    process = subprocess.run(["skopeo", "inspect", "--tls-verify=false",
                              f"docker://{registry.address}/{repository}:1"],
                             capture_output=True, timeout=60)
    assert process.returncode == 0, process.stderr.decode()
    seen = json.loads(process.stdout)
    assert seen["Digest"] == digest
    assert seen["Layers"] == [layer.digest for layer in image.layers]


def test_docker_media_types_are_pushed_and_pulled(registry, tmp_path):
    image = make_image(tmp_path, (Compression.GZIP, Compression.NONE), salt="docker",
                       docker=True)
    ref = Reference(registry.address, unique_repository(), "docker")
    client = session(registry.address)
    push_image(client, ref, image.config, image.layers, media_types="docker")

    resolved = resolve(client, ref, AMD64)
    manifest = json.loads(resolved.manifest)
    assert resolved.media_type == manifest["mediaType"] == DOCKER_MANIFEST
    assert manifest["config"]["mediaType"] == DOCKER_CONFIG
    assert [layer["mediaType"] for layer in manifest["layers"]] == [
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.docker.image.rootfs.diff.tar"]
    blobs = BlobStore(str(tmp_path / "store"))
    assert pull_layers(client, ref, resolved, blobs) == image.diff_ids


def test_zstd_layers_are_refused_in_a_docker_manifest(tmp_path):
    image = make_image(tmp_path, (Compression.ZSTD,), salt="zstd")
    unreachable = session("127.0.0.1:9")  # nothing is sent: the check comes first
    with pytest.raises(RegistryError, match="zstd layers need OCI media types"):
        push_image(unreachable, Reference("127.0.0.1:9", "app", "1"), image.config,
                   image.layers, media_types="docker")


def _push_platform_image(client: Session, address: str, repository: str, tmp_path,
                         architecture: str) -> Descriptor:
    """An image for one architecture, its manifest pushed by digest (as in an index)."""
    image = make_image(tmp_path / architecture, (Compression.GZIP,), salt=architecture,
                       architecture=architecture)
    untagged = Reference(address, repository)
    for layer in image.layers:
        push_blob(client, untagged, layer.digest, layer.size, layer.open)
    config = Descriptor("application/vnd.oci.image.config.v1+json",
                        sha256_digest(image.config), len(image.config))
    push_blob(client, untagged, config.digest, config.size, lambda: io.BytesIO(image.config))
    manifest = manifest_bytes(config, [Descriptor(layer.media_type, layer.digest, layer.size)
                                       for layer in image.layers])
    digest = push_manifest(client, Reference(address, repository, None,
                                             sha256_digest(manifest)), manifest, OCI_MANIFEST)
    return Descriptor(OCI_MANIFEST, digest, len(manifest))


def test_an_index_resolves_to_the_platform_asked_for(registry, tmp_path):
    client = session(registry.address)
    repository = unique_repository()
    amd64 = _push_platform_image(client, registry.address, repository, tmp_path, "amd64")
    arm64 = _push_platform_image(client, registry.address, repository, tmp_path, "arm64")
    index = dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {**amd64.to_json(), "platform": {"os": "linux", "architecture": "amd64"}},
        {**arm64.to_json(), "platform": {"os": "linux", "architecture": "arm64",
                                         "variant": "v8"}}]})
    ref = Reference(registry.address, repository, "multi")
    index_digest = push_manifest(client, ref, index, OCI_INDEX)

    arm = resolve(client, ref, Platform("linux", "arm64", "v8"))
    assert (arm.manifest_digest, arm.index_digest) == (arm64.digest, index_digest)
    assert json.loads(arm.config)["architecture"] == "arm64"
    assert resolve(client, ref, AMD64).manifest_digest == amd64.digest
    assert resolve(client, ref, Platform("linux", "arm64")).manifest_digest == arm64.digest
    by_digest = Reference(registry.address, repository, None, index_digest)
    assert resolve(client, by_digest, AMD64).manifest_digest == amd64.digest

    with pytest.raises(RegistryError) as error:
        resolve(client, ref, Platform("linux", "s390x"))
    assert str(error.value) == (f"pull {registry.address}/{repository}:multi: no image for "
                                "platform linux/s390x; the index has linux/amd64, linux/arm64/v8")


def test_pull_by_digest_and_a_missing_tag_named_in_the_error(registry, tmp_path):
    image = make_image(tmp_path, (Compression.GZIP,), salt="by digest")
    client = session(registry.address)
    repository = unique_repository()
    digest = push_image(client, Reference(registry.address, repository, "1"), image.config,
                        image.layers)
    by_digest = Reference(registry.address, repository, None, digest)
    resolved = resolve(client, by_digest, AMD64)
    assert resolved.manifest_digest == digest
    assert pull_layers(client, by_digest, resolved, BlobStore(str(tmp_path))) == image.diff_ids

    with pytest.raises(RegistryError) as error:
        resolve(client, Reference(registry.address, repository, "nope"), AMD64)
    assert error.value.status == 404
    assert str(error.value) == (f"pull {registry.address}/{repository}:nope: "
                                "404 MANIFEST_UNKNOWN manifest unknown")


def test_a_manifest_whose_digest_header_lies_is_refused(registry, proxy, tmp_path):
    client, ref, image, digest = _pushed(proxy.address, tmp_path, (Compression.NONE,))
    proxy.fault("GET", "/manifests/", "bad-digest")
    with pytest.raises(RegistryError, match=f"the registry says the manifest is sha256:0+, "
                                            f"but its content hashes to {digest}"):
        resolve(client, ref, AMD64)


@pytest.mark.parametrize("compression", list(Compression))
def test_a_blob_corrupted_in_the_registry_is_rejected(registry, tmp_path, compression):
    client, ref, image, _ = _pushed(registry.address, tmp_path, (compression,))
    resolved = resolve(client, ref, AMD64)
    [layer] = image.layers
    path = registry.blob_path(layer.digest)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))

    blobs = BlobStore(str(tmp_path / "store"))
    expected = (f"pull {registry.address}/{ref.repository}:1: blob {layer.digest}: the "
                "registry sent content that hashes to sha256:")
    with pytest.raises(RegistryError) as error:
        pull_layers(client, ref, resolved, blobs)
    assert str(error.value).startswith(expected)
    assert not blobs.has(image.diff_ids[0])
    assert not [name for name in os.listdir(blobs.dir) if name.startswith(".tmp-")]
    with pytest.raises(RegistryError) as error:
        fetch_blob(client, ref, layer.digest, io.BytesIO())
    assert str(error.value).startswith(expected)


def test_pushing_again_only_checks_and_pulling_again_downloads_nothing(registry, proxy,
                                                                       tmp_path):
    client, ref, image, digest = _pushed(proxy.address, tmp_path)
    assert len(proxy.requests("PUT", "/blobs/uploads/")) == 4  # three layers and the config
    blobs = BlobStore(str(tmp_path / "store"))
    pull_layers(client, ref, resolve(client, ref, AMD64), blobs)
    proxy.seen.clear()

    assert push_image(client, ref, image.config, image.layers) == digest
    assert len(proxy.requests("HEAD", "/blobs/")) == 4
    assert not proxy.requests("POST") and not proxy.requests("PATCH")
    assert [seen.path for seen in proxy.requests("PUT")] == [f"/v2/{ref.repository}/manifests/1"]

    proxy.seen.clear()
    assert pull_layers(client, ref, resolve(client, ref, AMD64), blobs) == image.diff_ids
    config_path = f"/blobs/{sha256_digest(image.config)}"
    assert [seen.path for seen in proxy.requests("GET", "/blobs/")] == [
        f"/v2/{ref.repository}{config_path}"]


def test_a_blob_larger_than_any_response_limit_is_found_by_its_head(registry, tmp_path):
    client = session(registry.address)
    ref = Reference(registry.address, unique_repository(), "1")
    data = os.urandom(9 << 20)
    digest = sha256_digest(data)
    push_blob(client, ref, digest, len(data), lambda: io.BytesIO(data))
    push_blob(client, ref, digest, len(data), lambda: pytest.fail("uploaded again"))


def test_a_push_to_another_repository_mounts_the_blobs(registry, proxy, tmp_path):
    image = make_image(tmp_path, salt="mount")
    client = session(proxy.address)
    source = unique_repository("source")
    push_image(client, Reference(proxy.address, source, "1"), image.config, image.layers)
    proxy.seen.clear()

    target = Reference(proxy.address, unique_repository("target"), "1")
    push_image(client, target, image.config, image.layers, mount_from=[source])
    assert len(proxy.requests("POST", "mount=")) == 4
    assert not proxy.requests("PATCH")
    assert [seen.path for seen in proxy.requests("PUT")] == [f"/v2/{target.repository}/manifests/1"]
    resolved = resolve(client, target, AMD64)
    assert pull_layers(client, target, resolved, BlobStore(str(tmp_path))) == image.diff_ids


def test_a_mount_the_registry_declines_becomes_an_upload(registry, proxy, tmp_path):
    image = make_image(tmp_path, (Compression.GZIP,), salt="no mount")
    client = session(proxy.address)
    ref = Reference(proxy.address, unique_repository(), "1")
    push_image(client, ref, image.config, image.layers, mount_from=["nowhere", "neither"])
    assert len(proxy.requests("POST", "mount=")) == 4  # two blobs, two sources each
    assert len(proxy.requests("DELETE", "/blobs/uploads/")) == 2  # the first refusal's upload
    assert len(proxy.requests("PUT", "/blobs/uploads/")) == 2
    assert resolve(client, ref, AMD64).config == image.config


def test_a_chunked_upload_with_relative_locations(tmp_path):
    server = Registry(relative_urls=True)
    front = Proxy(server.address)
    try:
        client = session(front.address)
        ref = Reference(front.address, unique_repository(), "1")
        data = os.urandom(10_000)
        digest = sha256_digest(data)
        push_blob(client, ref, digest, len(data), lambda: io.BytesIO(data), chunk_size=3000)
        patches = front.requests("PATCH")
        assert [p.headers["Content-Range"] for p in patches] == [
            "0-2999", "3000-5999", "6000-8999", "9000-9999"]
        assert all(p.path.startswith(f"/v2/{ref.repository}/blobs/uploads/") for p in patches)
        [close] = front.requests("PUT")
        assert f"digest={digest.replace(':', '%3A')}" in close.path and "_state=" in close.path
        out = io.BytesIO()
        assert fetch_blob(client, ref, digest, out) == len(data)
        assert out.getvalue() == data
    finally:
        front.stop()
        server.stop()


@pytest.mark.parametrize("chunk", [0, 1])
def test_a_refused_chunk_resumes_from_the_upload_status(registry, proxy, chunk):
    client = session(proxy.address)
    ref = Reference(proxy.address, unique_repository(), "1")
    data = os.urandom(9_000)
    proxy.fault("PATCH", "/blobs/uploads/", "", times=chunk)  # the chunks before go through
    proxy.fault("PATCH", "/blobs/uploads/", "416")  # distribution 2.8 itself never sends one
    push_blob(client, ref, sha256_digest(data), len(data), lambda: io.BytesIO(data),
              chunk_size=3000)
    assert len(proxy.requests("GET", "/blobs/uploads/")) == 1  # the status, after the 416
    assert [p.headers["Content-Range"] for p in proxy.requests("PATCH")][chunk:chunk + 2] == \
        [f"{3000 * chunk}-{3000 * chunk + 2999}"] * 2
    out = io.BytesIO()
    fetch_blob(client, ref, sha256_digest(data), out)
    assert out.getvalue() == data


def test_an_upload_whose_answer_was_lost_is_found_complete(registry, proxy):
    client = session(proxy.address)
    ref = Reference(proxy.address, unique_repository(), "1")
    data = os.urandom(5_000)
    proxy.fault("PUT", "/blobs/uploads/", "lose-answer")
    push_blob(client, ref, sha256_digest(data), len(data), lambda: io.BytesIO(data))
    assert len(proxy.requests("PUT", "/blobs/uploads/")) == 2  # the second finds it closed
    assert len(proxy.requests("HEAD")) == 2


def test_a_blob_download_dropped_midway_resumes_where_it_stopped(registry, proxy, tmp_path):
    lines: list[str] = []
    client, ref, image, _ = _pushed(proxy.address, tmp_path, lines=lines)
    proxy.fault("GET", f"/blobs/{image.layers[0].digest}", "drop")

    blobs = BlobStore(str(tmp_path / "store"))
    assert pull_layers(client, ref, resolve(client, ref, AMD64), blobs) == image.diff_ids
    assert blobs.read_bytes(image.diff_ids[0]) == image.tars[0]
    [resumed] = [seen for seen in proxy.requests("GET", image.layers[0].digest)
                 if "Range" in seen.headers]
    assert resumed.headers["Range"] == f"bytes={image.layers[0].size // 2}-"
    assert any("IncompleteRead" in line and "retrying" in line for line in lines)


def test_429_is_retried_after_its_retry_after(registry, proxy, tmp_path):
    client, ref, _, digest = _pushed(proxy.address, tmp_path, (Compression.NONE,))
    proxy.fault("GET", "/manifests/", "429")
    assert resolve(client, ref, AMD64).manifest_digest == digest
    assert len(proxy.requests("GET", "/manifests/")) == 2


def test_503_twice_then_success(registry, proxy, tmp_path):
    image = make_image(tmp_path, (Compression.NONE,), salt="503")
    lines: list[str] = []
    client = session(proxy.address, lines)
    proxy.fault("PUT", "/manifests/", "503", times=2)
    ref = Reference(proxy.address, unique_repository(), "1")
    digest = push_image(client, ref, image.config, image.layers)
    assert len(proxy.requests("PUT", "/manifests/")) == 3
    assert sum(line.startswith("retrying PUT ") and line.endswith(": 503")
               for line in lines) == 2
    assert resolve(client, ref, AMD64).manifest_digest == digest


def test_a_registry_that_stays_unavailable_fails_with_its_error(registry, proxy):
    client = session(proxy.address, retries=2)
    proxy.fault("GET", "/manifests/", "503", times=10)
    ref = Reference(proxy.address, unique_repository(), "1")
    with pytest.raises(RegistryError) as error:
        resolve(client, ref, AMD64)
    assert error.value.status == 503
    assert str(error.value) == (f"pull {proxy.address}/{ref.repository}:1: "
                                "503 UNAVAILABLE injected")
    assert len(proxy.requests("GET", "/manifests/")) == 3


def test_a_registry_nothing_listens_on_fails_at_once():
    lines: list[str] = []
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(RegistryError) as error:
        resolve(session(address, lines), Reference(address, "app", "1"), AMD64)
    assert "Connection refused" in str(error.value)
    assert lines == []  # no retries: nothing has ever answered there


def test_a_registry_that_answered_is_retried_when_it_refuses(registry):
    lines: list[str] = []
    client = session(registry.address, lines, retries=2)
    with pytest.raises(RegistryError) as error:
        resolve(client, Reference(registry.address, unique_repository(), "1"), AMD64)
    assert error.value.status == 404
    registry.process.terminate()
    registry.process.wait()
    with pytest.raises(RegistryError) as error:
        resolve(client, Reference(registry.address, unique_repository(), "1"), AMD64)
    assert "Connection refused" in str(error.value)
    assert sum("retrying" in line for line in lines) == 2


@pytest.mark.parametrize("registry_name,insecure,base_url", [
    ("docker.io", False, "https://registry-1.docker.io"),
    ("ghcr.io", False, "https://ghcr.io"),
    ("registry.example:5000", False, "https://registry.example:5000"),
    ("registry.example:5000", True, "http://registry.example:5000"),
    ("localhost:5000", False, "http://localhost:5000"),
    ("localhost", False, "http://localhost"),
    ("127.0.0.1:5000", False, "http://127.0.0.1:5000"),
    ("[::1]:5000", False, "http://[::1]:5000"),
    ("localhost.example", False, "https://localhost.example"),
])
def test_plain_http_only_for_this_machine_or_when_asked(registry_name, insecure, base_url):
    assert Session(registry_name, insecure=insecure, credentials=None).base_url == base_url
