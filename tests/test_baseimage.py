"""FROM's sources: --build-context forms, the local store, and the errors that say where pybuild
looked."""
from __future__ import annotations

import json
import re
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from builder.sources.baseimage import (ArchiveSource, DirectorySource, StoreSource,
                                       parse_build_context, resolve_base)
from builder.errors import BuildError
from layers.blobstore import BlobStore
from layers.image import sha256_digest
from layers.imagestore import ImageStore
from layers.reference import parse_reference
from tests.sample_images import make_image, write_tarball
from tests.support import busybox_base, pybuild, require


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(str(tmp_path / "cache"))


@pytest.fixture
def source(tmp_path: Path) -> BlobStore:
    return BlobStore(str(tmp_path / "source"))


def test_parse_build_context_forms(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    digest = "sha256:" + "a" * 64
    assert parse_build_context("base=docker-image://busybox:1.36") == (
        "base", StoreSource("docker-image://busybox:1.36", parse_reference("busybox:1.36")))
    assert parse_build_context("base=oci-layout://./layout:1.0") == (
        "base", ArchiveSource("oci-layout://./layout:1.0", str(tmp_path / "layout"), "1.0"))
    assert parse_build_context(f"base=oci-layout:///srv/layout@{digest}")[1] == \
        ArchiveSource(f"oci-layout:///srv/layout@{digest}", "/srv/layout", None, digest)
    assert parse_build_context("alpine:3=docker-archive:img.tar:alpine:3.19")[1] == \
        ArchiveSource("docker-archive:img.tar:alpine:3.19", str(tmp_path / "img.tar"), "alpine:3.19")
    assert parse_build_context("x=oci-archive:/a/b.tar")[1] == \
        ArchiveSource("oci-archive:/a/b.tar", "/a/b.tar")
    assert parse_build_context("src=../src")[1] == DirectorySource("../src", str(tmp_path.parent / "src"))
    for bad, message in (("base", "expected NAME=SOURCE"), ("=x", "expected NAME=SOURCE"),
                         ("base=", "expected NAME=SOURCE"),
                         ("b=https://example.com/repo.git", "not supported yet"),
                         ("b=docker-image://Bad:Name", "invalid reference"),
                         ("b=oci-layout://dir@md5:00", "not a sha256 digest"),
                         ("b=docker-archive:", "no path given")):
        with pytest.raises(ValueError, match=message):
            parse_build_context(bad)


def test_from_the_local_store(store: ImageStore) -> None:
    config = make_image(store.blobs, {"etc/hello": b"hi\n"})
    store.put(config, [parse_reference("busybox:1.36")])
    for name in ("busybox:1.36", "docker.io/library/busybox:1.36"):
        base = resolve_base(name, store, {})
        assert base.image_id == sha256_digest(config)
        assert base.diff_ids == tuple(json.loads(config)["rootfs"]["diff_ids"])
        assert base.config.config.cmd == ("sh",)
        assert base.origin == f"the local image store ({store.dir}): busybox:1.36"


def test_not_found_says_where_pybuild_looked(store: ImageStore) -> None:
    store.put(make_image(store.blobs, {"a": b"1"}), [parse_reference("busybox:test")])
    contexts = dict([parse_build_context("tools=docker-image://tools:1")])
    with pytest.raises(BuildError) as caught:
        resolve_base("busybox:1.36", store, contexts)
    message = caught.value.message
    assert message.startswith("base image 'busybox:1.36' not found: no --build-context is named "
                              "busybox:1.36 (tools), and the local image store")
    assert store.dir in message and "(it has busybox:test)" in message
    assert "pybuild load -i ARCHIVE" in message and "registry" not in message
    with pytest.raises(BuildError, match=r"--build-context tools=docker-image://tools:1 names "
                                         r"tools:1, which the local image store .* does not have"):
        resolve_base("tools", store, contexts)
    with pytest.raises(BuildError, match="FROM Bad: invalid reference"):
        resolve_base("Bad", store, {})


def test_a_context_named_like_the_image_wins_over_the_store(store: ImageStore) -> None:
    stored = make_image(store.blobs, {"a": b"stored"}, cmd="stored")
    other = make_image(store.blobs, {"a": b"other"}, cmd="other")
    store.put(stored, [parse_reference("alpine:latest")])
    store.put(other, [parse_reference("mirror.example/alpine:edge")])
    contexts = dict([parse_build_context("alpine=docker-image://mirror.example/alpine:edge")])
    for name in ("alpine", "alpine:latest", "docker.io/library/alpine"):
        base = resolve_base(name, store, contexts)
        assert base.image_id == sha256_digest(other)
        assert base.origin == "--build-context alpine=docker-image://mirror.example/alpine:edge"
    store.put(stored, [parse_reference("alpine:3")])
    assert resolve_base("alpine:3", store, contexts).image_id == sha256_digest(stored)


def test_archive_contexts_import_layers_without_tagging(tmp_path: Path, store: ImageStore,
                                                        source: BlobStore) -> None:
    first = make_image(source, {"one": b"1"}, cmd="first")
    second = make_image(source, {"two": b"2"}, cmd="second")
    layout = tmp_path / "layout"
    manifests = []
    for config, tag in ((first, "one:1.0"), (second, "two:latest")):
        archive = tmp_path / f"{tag.replace(':', '-')}.tar"
        write_tarball(archive, source, config, (tag,))
        with tarfile.open(archive) as tar:
            tar.extractall(layout)
            manifests += json.load(tar.extractfile("index.json"))["manifests"]
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": manifests}))

    def resolve(value: str):
        return resolve_base("base", store, dict([parse_build_context(f"base={value}")]))

    assert resolve(f"oci-layout://{layout}:1.0").image_id == sha256_digest(first)
    assert resolve(f"oci-layout://{layout}").image_id == sha256_digest(second), "latest"
    assert resolve(f"oci-layout://{layout}@{manifests[0]['digest']}").image_id == \
        sha256_digest(first)
    assert resolve(f"docker-archive:{tmp_path / 'one-1.0.tar'}").image_id == sha256_digest(first)
    assert resolve(f"docker-archive:{tmp_path / 'one-1.0.tar'}:one:1.0").image_id == \
        sha256_digest(first)
    assert resolve(f"oci-archive:{tmp_path / 'two-latest.tar'}:latest").image_id == \
        sha256_digest(second)
    with pytest.raises(BuildError, match="missing.tar: No such file or directory"):
        resolve(f"docker-archive:{tmp_path / 'missing.tar'}")
    for config in (first, second):
        for diff_id in json.loads(config)["rootfs"]["diff_ids"]:
            assert store.blobs.has(diff_id)
    assert store.list() == [], "an archive context tags nothing in the store"

    with pytest.raises(BuildError, match=r"no image matches 2.0 \(the archive has: 1.0, latest, "
                                         r"one:1.0, two:latest\)"):
        resolve(f"oci-layout://{layout}:2.0")
    os.unlink(layout / "index.json")
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2,
                                                   "manifests": [manifests[0]]}))
    assert resolve(f"oci-layout://{layout}").image_id == sha256_digest(first), "the only image"


def test_a_directory_context_is_no_base_image(tmp_path: Path, store: ImageStore) -> None:
    with pytest.raises(BuildError, match="is a directory; a directory can be used with COPY"):
        resolve_base("base", store, dict([parse_build_context(f"base={tmp_path}")]))


def test_a_store_image_whose_layer_is_gone(store: ImageStore) -> None:
    config = make_image(store.blobs, {"a": b"1"})
    store.put(config, [parse_reference("app:1")])
    os.unlink(store.blobs.path(json.loads(config)["rootfs"]["diff_ids"][0]))
    with pytest.raises(BuildError, match="is missing from .*; load the image again"):
        resolve_base("app:1", store, {})


def test_an_oci_layout_made_by_skopeo(tmp_path: Path, store: ImageStore, source: BlobStore) -> None:
    require(shutil.which("skopeo") is not None, "skopeo")
    config = make_image(source, {"etc/hello": b"hello\n"})
    archive = tmp_path / "app.tar"
    write_tarball(archive, source, config, ("app:1",))
    layout = tmp_path / "layout"
    subprocess.run(["skopeo", "copy", "--quiet", f"docker-archive:{archive}", f"oci:{layout}:v1"],
                   check=True, capture_output=True, timeout=300)
    base = resolve_base("app", store, dict([parse_build_context(f"app=oci-layout://{layout}:v1")]))
    assert base.diff_ids == tuple(json.loads(config)["rootfs"]["diff_ids"])
    assert all(store.blobs.has(d) for d in base.diff_ids)


def test_an_archive_contexts_layers_are_unpacked_while_read_each_a_step(tmp_path: Path) -> None:
    """FROM a `--build-context NAME=docker-archive:...`: each layer read from the archive is an
    `unpacking` step of the log (entries, bytes), unpacked as it is read, and the RUN on it
    unpacks nothing more."""
    require(os.geteuid() == 0, "root (a snapshot unpacked while read is kept only as root)")
    archive = busybox_base(tmp_path)
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Dockerfile").write_text("FROM base\nRUN echo ran > /ran\n")
    result = pybuild("--progress", "plain", "--build-context",
                     f"base=docker-archive:{archive}", "-o", str(tmp_path / "image.tar"),
                     str(tmp_path / "ctx"), env={"PYBUILD_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr
    steps = re.findall(r"^#(\d+) unpacking (sha256:\w{12})$", result.stderr, re.MULTILINE)
    with tarfile.open(archive) as tar:
        (item,) = json.load(tar.extractfile("manifest.json"))
        diff_ids = json.load(tar.extractfile(item["Config"]))["rootfs"]["diff_ids"]
    assert sorted(digest for _, digest in steps) == sorted(d[:19] for d in diff_ids)
    (run,) = re.findall(r"^#(\d+) \[stage-0 1/1\] RUN", result.stderr, re.MULTILINE)
    for number, _ in steps:
        assert int(number) < int(run), "unpacked while FROM read the archive, not for the RUN"
        entries = re.search(rf"^#{number} ([\d,]+) entries, ", result.stderr, re.MULTILINE)
        assert entries and int(entries[1].replace(",", "")) > 100, result.stderr
