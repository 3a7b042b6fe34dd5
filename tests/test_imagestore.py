"""The local image store: tags, lookups, removal, its manifests, and concurrent writers."""
from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest

from layers.errors import LayerError
from layers.image import sha256_digest
from layers.imagestore import ImageStore
from layers.reference import parse_reference
from tests.sample_images import make_image, write_tarball


def ref(text: str):
    return parse_reference(text)


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(str(tmp_path / "cache"))


def test_put_then_get_by_any_spelling_of_the_name(store: ImageStore) -> None:
    config = make_image(store.blobs, {"etc/hello": b"hi\n"}, {"bin/tool": b"#!/bin/sh\n"})
    manifest_digest = store.put(config, [ref("busybox:1.36"), ref("example.com/team/app")])
    for name in ("busybox:1.36", "docker.io/library/busybox:1.36", "index.docker.io/busybox:1.36"):
        image = store.get(ref(name))
        assert image is not None, name
        assert image.config_bytes == config
        assert image.image_id == sha256_digest(config)
        assert image.manifest_digest == manifest_digest
        assert image.diff_ids == tuple(json.loads(config)["rootfs"]["diff_ids"])
        assert image.config.config.cmd == ("sh",)
    assert store.get(ref("example.com/team/app:latest")).image_id == sha256_digest(config)
    assert store.get(ref("busybox:1.35")) is None
    assert store.get(ref("busybox")) is None


def test_the_manifest_is_the_one_of_pybuilds_uncompressed_tarball(store: ImageStore,
                                                                  tmp_path: Path) -> None:
    """Every blob the stored manifest names is in the blob store, and its digest identifies the
    image as pybuild's own output of it would."""
    config = make_image(store.blobs, {"a": b"1"}, {"b": b"2"})
    manifest_digest = store.put(config, [ref("app:1")])
    assert write_tarball(tmp_path / "app.tar", store.blobs, config, ("app:1",)) == manifest_digest
    manifest = json.loads(store.blobs.read_bytes(manifest_digest))
    assert manifest["config"]["digest"] == sha256_digest(config)
    assert [layer["digest"] for layer in manifest["layers"]] == json.loads(config)["rootfs"]["diff_ids"]
    for layer in manifest["layers"]:
        assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar"
        assert os.path.getsize(store.blobs.path(layer["digest"])) == layer["size"]


def test_lookup_by_digest_ignores_the_tag(store: ImageStore) -> None:
    config = make_image(store.blobs, {"a": b"1"})
    archive_digest = "sha256:" + "ab" * 32
    manifest_digest = store.put(config, [ref("app:1")], digests=[archive_digest])
    assert store.get(ref(f"app@{manifest_digest}")).image_id == sha256_digest(config)
    assert store.get(ref(f"other:9@{archive_digest}")).image_id == sha256_digest(config)
    assert store.get(ref("app@sha256:" + "cd" * 32)) is None


def test_a_moved_tag_leaves_the_old_image_untagged(store: ImageStore) -> None:
    old = make_image(store.blobs, {"a": b"old"}, cmd="old")
    new = make_image(store.blobs, {"a": b"new"}, cmd="new")
    store.put(old, [ref("app:1"), ref("app:stable")])
    store.put(new, [ref("app:1")])
    listing = {(i.ref.familiar() if i.ref else None): i.image_id for i in store.list()}
    assert listing == {"app:1": sha256_digest(new), "app:stable": sha256_digest(old)}
    store.put(new, [ref("app:stable")])
    listing = [(i.ref.familiar() if i.ref else None, i.image_id) for i in store.list()]
    assert listing == [("app:1", sha256_digest(new)), ("app:stable", sha256_digest(new)),
                       (None, sha256_digest(old))]


def test_tagging_an_image_again_rewrites_nothing_and_a_new_tag_does(store: ImageStore) -> None:
    config = make_image(store.blobs, {"a": b"same"})
    store.put(config, [ref("app:1")])
    before = os.stat(store.index_path)
    store.put(config, [ref("app:1")])
    after = os.stat(store.index_path)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    store.put(config, [ref("app:2")])
    assert os.stat(store.index_path).st_ino != before.st_ino
    assert store.get(ref("app:2")).image_id == sha256_digest(config)


def test_remove_untags_and_drops_an_image_with_its_last_tag(store: ImageStore) -> None:
    config = make_image(store.blobs, {"a": b"1"})
    manifest_digest = store.put(config, [ref("app:1"), ref("app:2")])
    assert store.remove(ref("app:1")).manifest_digest == manifest_digest
    assert store.get(ref(f"app@{manifest_digest}")) is not None
    assert store.remove(ref("app:1")) is None
    store.remove(ref("app:2"))
    assert store.get(ref(f"app@{manifest_digest}")) is None
    assert store.list() == []
    diff_id = json.loads(config)["rootfs"]["diff_ids"][0]
    assert store.blobs.has(diff_id), "layers stay: other images may share them"


def test_delete_removes_an_image_with_all_its_tags(store: ImageStore) -> None:
    keep = store.put(make_image(store.blobs, {"k": b"k"}, cmd="keep"), [ref("keep:1")])
    gone = store.put(make_image(store.blobs, {"g": b"g"}, cmd="gone"), [ref("a:1"), ref("b:2")])
    assert [r.familiar() for r in store.delete(gone)] == ["a:1", "b:2"]
    assert store.delete(gone) == []
    assert [i.manifest_digest for i in store.list()] == [keep]


def test_an_untagged_image_is_listed_once(store: ImageStore) -> None:
    config = make_image(store.blobs, {"a": b"1"})
    store.put(config)
    store.put(config)
    [image] = store.list()
    assert image.ref is None and image.image_id == sha256_digest(config)


def test_an_image_whose_layer_is_not_stored_is_refused(store: ImageStore, tmp_path: Path) -> None:
    config = make_image(store.blobs, {"a": b"1"})
    store.put(config, [ref("app:1")])
    before = Path(store.index_path).read_bytes()
    other = ImageStore(str(tmp_path / "other"))
    other_config = make_image(other.blobs, {"b": b"2"})
    with pytest.raises(LayerError, match="is not in the blob store"):
        store.put(other_config, [ref("app:1")])
    assert Path(store.index_path).read_bytes() == before


def test_a_damaged_index_is_a_clear_error(store: ImageStore) -> None:
    Path(store.index_path).write_text("{not json")
    with pytest.raises(LayerError, match="index.json is not valid JSON.*remove it"):
        store.list()


def _put_many(root: str, worker: int, count: int) -> None:
    store = ImageStore(root)
    for i in range(count):
        config = make_image(store.blobs, {"f": f"{worker}-{i}".encode()}, cmd=f"{worker}-{i}")
        store.put(config, [ref(f"w{worker}:{i}"), ref("shared:latest")])


def test_concurrent_writers_lose_no_tag(tmp_path: Path) -> None:
    root = str(tmp_path / "cache")
    workers, count = 6, 15
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_put_many, args=(root, w, count)) for w in range(workers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    store = ImageStore(root)
    names = {i.ref.familiar() for i in store.list() if i.ref}
    assert names == {f"w{w}:{i}" for w in range(workers) for i in range(count)} | {"shared:latest"}
    assert len(store.list()) == workers * count + 1  # "shared:latest" is one more row
    assert [p.name for p in Path(root, "images").iterdir() if p.name.startswith(".")] == []
