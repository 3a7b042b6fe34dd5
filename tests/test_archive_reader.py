"""Reading docker-save archives and OCI layouts into the blob store: pybuild's own tarballs in
every compression, real `docker save` output, skopeo's OCI layouts, and damaged archives."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from layers.archive_reader import ImageArchive, read_archive
from layers.blobstore import BlobStore
from layers.compression import Compression
from layers.errors import LayerError
from layers.image import (OCI_INDEX, OCI_MANIFEST, ContainerConfig, ImageConfig, chain_ids, dumps,
                          parse_config, sha256_digest)
from layers.platform import host_platform
from layers.snapshots import SnapshotStore
from tests.sample_images import make_image, write_tarball
from tests.support import DockerImages, docker, docker_available, require

FILES = ({"etc/hello": b"hello\n", "etc/gone": b"x"}, {"bin/tool": b"#!/bin/sh\necho tool\n" * 500})


@pytest.fixture
def source(tmp_path: Path) -> BlobStore:
    """Where the sample images are made."""
    return BlobStore(str(tmp_path / "source"))


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    """The blob store archives are read into."""
    return BlobStore(str(tmp_path / "cache"))


def stored_files(blobs: BlobStore) -> set[str]:
    return set(os.listdir(blobs.dir))


def assert_layers_stored(blobs: BlobStore, source: BlobStore, diff_ids: tuple[str, ...]) -> None:
    for diff_id in diff_ids:
        data = Path(blobs.path(diff_id)).read_bytes()
        assert "sha256:" + hashlib.sha256(data).hexdigest() == diff_id
        assert data == Path(source.path(diff_id)).read_bytes()


@pytest.mark.parametrize("compression", list(Compression))
def test_pybuilds_own_tarballs_round_trip(tmp_path: Path, source: BlobStore, blobs: BlobStore,
                                          compression: Compression) -> None:
    config = make_image(source, *FILES)
    archive = tmp_path / "image.tar"
    manifest_digest = write_tarball(archive, source, config, ("app:1", "example.com/x/y:2"),
                                    compression)
    [entry] = read_archive(str(archive), blobs)
    assert entry.config == config
    assert entry.image_id == sha256_digest(config)
    assert [n.full() for n in entry.names] == ["docker.io/library/app:1", "example.com/x/y:2"]
    assert entry.ref_names == ("1", "2")
    assert entry.digests == (manifest_digest,)
    assert entry.diff_ids == tuple(json.loads(config)["rootfs"]["diff_ids"])
    assert_layers_stored(blobs, source, entry.diff_ids)
    assert not [name for name in stored_files(blobs) if name.startswith(".")]


def test_the_docker_save_view_alone(tmp_path: Path, source: BlobStore, blobs: BlobStore) -> None:
    """Without oci-layout and index.json, manifest.json is read, as the classic `docker load`."""
    config = make_image(source, *FILES)
    archive = tmp_path / "image.tar"
    write_tarball(archive, source, config, ("app:1",))
    docker_only = tmp_path / "docker-only.tar"
    with tarfile.open(archive) as full, tarfile.open(docker_only, "w") as out:
        for member in full.getmembers():
            if member.name not in ("oci-layout", "index.json"):
                out.addfile(member, full.extractfile(member) if member.isfile() else None)
    [entry] = read_archive(str(docker_only), blobs)
    assert entry.config == config
    assert [n.familiar() for n in entry.names] == ["app:1"]
    assert entry.ref_names == () and entry.digests == ()
    assert_layers_stored(blobs, source, entry.diff_ids)


def test_an_oci_layout_directory_and_a_compressed_archive(tmp_path: Path, source: BlobStore,
                                                          blobs: BlobStore) -> None:
    config = make_image(source, *FILES)
    archive = tmp_path / "image.tar"
    write_tarball(archive, source, config, ("app:1",), Compression.GZIP)
    layout = tmp_path / "layout"
    with tarfile.open(archive) as tar:
        tar.extractall(layout)
    [entry] = read_archive(str(layout), blobs)
    assert entry.config == config and [n.familiar() for n in entry.names] == ["app:1"]
    assert_layers_stored(blobs, source, entry.diff_ids)

    compressed = tmp_path / "image.tar.gz"
    compressed.write_bytes(gzip.compress(archive.read_bytes()))
    fresh = BlobStore(str(tmp_path / "fresh"))
    [entry] = read_archive(str(compressed), fresh)
    assert entry.config == config
    assert_layers_stored(fresh, source, entry.diff_ids)
    assert not [name for name in stored_files(fresh) if name.startswith(".")], \
        "the decompressed copy of the archive is removed"


def test_a_layer_already_stored_is_not_read(tmp_path: Path, source: BlobStore) -> None:
    """The archive's layer is damaged, but the blob store has the layer: it is not read again."""
    config = make_image(source, *FILES)
    layout = tmp_path / "layout"
    with tarfile.open(_tarball(tmp_path, source, config)) as tar:
        tar.extractall(layout)
    for diff_id in json.loads(config)["rootfs"]["diff_ids"]:
        Path(layout, "blobs/sha256", diff_id[7:]).write_bytes(b"damaged")
    [entry] = read_archive(str(layout), source)
    assert entry.config == config


def test_a_corrupted_layer_is_refused_and_nothing_is_stored(tmp_path: Path, source: BlobStore,
                                                            blobs: BlobStore) -> None:
    config = make_image(source, *FILES)
    archive = _tarball(tmp_path, source, config)
    bad_diff_id = json.loads(config)["rootfs"]["diff_ids"][1]
    broken = tmp_path / "broken.tar"
    _rewrite(archive, broken, {"blobs/sha256/" + bad_diff_id[7:]: _flip_a_byte})
    # Without the OCI view the diff ID check is the only one (a descriptor's digest would catch
    # the damage first).
    docker_only = tmp_path / "docker-only.tar"
    _rewrite(broken, docker_only, {"oci-layout": None, "index.json": None})
    with pytest.raises(LayerError, match=f"layer blobs/sha256/{bad_diff_id[7:]}: its "
                                         f"uncompressed content has diff ID .* but the image "
                                         f"config lists {bad_diff_id}"):
        read_archive(str(docker_only), blobs)
    assert not blobs.has(bad_diff_id)
    assert not [name for name in stored_files(blobs) if name.startswith(".")]
    with pytest.raises(LayerError, match="does not match its digest|diff ID"):
        read_archive(str(broken), blobs)
    assert not blobs.has(bad_diff_id)


@pytest.mark.parametrize("compression", [Compression.NONE, Compression.GZIP])
def test_layers_are_unpacked_into_their_snapshots_as_they_are_read(
        tmp_path: Path, source: BlobStore, blobs: BlobStore, compression: Compression) -> None:
    """What the first build would unpack (`pybuild load` passes the snapshot store): the same
    directories, made while the archive is read, so the build has nothing left to unpack."""
    config = make_image(source, *FILES)
    snapshots = SnapshotStore(blobs.root)
    [entry] = read_archive(str(_tarball(tmp_path, source, config, compression)), blobs, snapshots)
    unpacked = []
    dirs = snapshots.ensure(entry.diff_ids, blobs.path,
                            lambda diff_id, size: unpacked.append(diff_id))
    assert unpacked == []
    assert dirs == [snapshots.path(chain) for chain in chain_ids(entry.diff_ids)]
    assert Path(dirs[0], "etc/hello").read_bytes() == b"hello\n"
    assert Path(dirs[1], "bin/tool").read_bytes() == FILES[1]["bin/tool"]
    assert_layers_stored(blobs, source, entry.diff_ids)
    assert _snapshot_temps(blobs) == []


def test_a_corrupted_layer_leaves_no_snapshot(tmp_path: Path, source: BlobStore,
                                              blobs: BlobStore) -> None:
    """Unpacked as it is read, but the diff ID is only known at the end: a layer that does not
    have the config's diff ID must not become the snapshot the config's chain names."""
    config = make_image(source, *FILES)
    diff_ids = tuple(json.loads(config)["rootfs"]["diff_ids"])
    broken = tmp_path / "broken.tar"
    _rewrite(_tarball(tmp_path, source, config), broken,
             {"blobs/sha256/" + diff_ids[1][7:]: _flip_a_byte, "oci-layout": None,
              "index.json": None})
    snapshots = SnapshotStore(blobs.root)
    with pytest.raises(LayerError, match="diff ID"):
        read_archive(str(broken), blobs, snapshots)
    assert not os.path.exists(snapshots.path(chain_ids(diff_ids)[1]))
    assert _snapshot_temps(blobs) == []


@pytest.mark.parametrize("name", ["../escaped", "a/../../escaped"])
def test_a_layer_the_unpacker_refuses_is_loaded_and_refused_by_the_build(
        tmp_path: Path, name: str) -> None:
    """A hostile layer's digests are right, so loading it is not an error (as before load
    unpacked); its snapshot is not made, and the build that needs it says why."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    source = BlobStore(str(tmp_path / "source"))
    diff_id = source.put_bytes(layer.getvalue())
    config = ImageConfig(config=ContainerConfig(cmd=("sh",)), diff_ids=(diff_id,)).to_bytes()
    snapshots = SnapshotStore(str(tmp_path / "cache" / "nested"))
    blobs = BlobStore(snapshots.root)
    [entry] = read_archive(str(_tarball(tmp_path, source, config)), blobs, snapshots)
    assert blobs.has(diff_id)
    assert not os.path.exists(snapshots.path(chain_ids(entry.diff_ids)[0]))
    with pytest.raises(LayerError, match="unpacking layer .*path leads outside the root"):
        snapshots.ensure(entry.diff_ids, blobs.path)
    assert not list(tmp_path.rglob("escaped"))
    assert _snapshot_temps(blobs) == []


def test_a_compressed_layer_that_does_not_match_its_descriptor(tmp_path: Path, source: BlobStore,
                                                               blobs: BlobStore) -> None:
    """Recompressed bytes: the same diff ID, but not the blob the manifest's digest names."""
    config = make_image(source, *FILES)
    layout = tmp_path / "layout"
    with tarfile.open(_tarball(tmp_path, source, config, Compression.GZIP)) as tar:
        tar.extractall(layout)
    manifest = _manifest(layout)
    layer = manifest["layers"][1]
    path = layout / "blobs/sha256" / layer["digest"][7:]
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()), compresslevel=1, mtime=0))
    layer["size"] = path.stat().st_size
    _replace_manifest(layout, manifest)
    with pytest.raises(LayerError, match=f"its content does not match its digest {layer['digest']}"):
        read_archive(str(layout), blobs)
    assert not blobs.has(json.loads(config)["rootfs"]["diff_ids"][1])


@pytest.mark.parametrize("unpacked", [False, True])
def test_a_truncated_gzip_layer_is_a_clear_error(tmp_path: Path, source: BlobStore,
                                                 blobs: BlobStore, unpacked: bool) -> None:
    config = make_image(source, *FILES)
    layout = tmp_path / "layout"
    with tarfile.open(_tarball(tmp_path, source, config, Compression.GZIP)) as tar:
        tar.extractall(layout)
    for layer in _manifest(layout)["layers"]:
        path = layout / "blobs/sha256" / layer["digest"][7:]
        path.write_bytes(path.read_bytes()[:-20])
    snapshots = SnapshotStore(blobs.root) if unpacked else None
    with pytest.raises(LayerError, match="cannot be decompressed: Compressed file ended"):
        read_archive(str(layout), blobs, snapshots)
    assert not [name for name in stored_files(blobs) if name.startswith(".")]
    assert _snapshot_temps(blobs) == []
    assert not unpacked or os.listdir(snapshots.dir) == []


def test_a_multi_platform_index_resolves_to_the_host(tmp_path: Path, source: BlobStore,
                                                     blobs: BlobStore) -> None:
    config = make_image(source, *FILES)
    layout = tmp_path / "layout"
    with tarfile.open(_tarball(tmp_path, source, config)) as tar:
        tar.extractall(layout)
    index = json.loads((layout / "index.json").read_text())
    image = index["manifests"][0]
    host = host_platform()
    other = {"os": "linux", "architecture": "s390x" if host.architecture != "s390x" else "amd64"}
    nested = dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "0" * 64, "size": 2, "platform": other},
        {"mediaType": OCI_MANIFEST, "digest": image["digest"], "size": image["size"],
         "platform": {"os": host.os, "architecture": host.architecture}},
        {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "1" * 64, "size": 2,
         "platform": {"os": "unknown", "architecture": "unknown"}}]})
    nested_digest = sha256_digest(nested)
    (layout / "blobs/sha256" / nested_digest[7:]).write_bytes(nested)
    (layout / "index.json").write_bytes(dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": OCI_INDEX, "digest": nested_digest, "size": len(nested),
         "annotations": {"org.opencontainers.image.ref.name": "multi"}}]}))
    [entry] = read_archive(str(layout), blobs)
    assert entry.config == config
    assert entry.ref_names == ("multi",) and entry.names == ()
    assert entry.digests == (nested_digest, image["digest"])

    only_other = dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": image["digest"], "size": image["size"],
         "platform": other}]})
    (layout / "blobs/sha256" / sha256_digest(only_other)[7:]).write_bytes(only_other)
    (layout / "index.json").write_bytes(dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": OCI_INDEX, "digest": sha256_digest(only_other), "size": len(only_other)}]}))
    with pytest.raises(LayerError, match=f"has no image for {host}.*it has: linux/"
                                         f"{other['architecture']}"):
        read_archive(str(layout), blobs)


def test_several_images_and_tags_in_one_index(tmp_path: Path, source: BlobStore,
                                              blobs: BlobStore) -> None:
    """Each entry of index.json is an image; entries naming one manifest are one image."""
    first = make_image(source, FILES[0], cmd="first")
    second = make_image(source, FILES[1], cmd="second")
    layout = tmp_path / "layout"
    for config, tags in ((first, ("one:1", "one:latest")), (second, ("two:2",))):
        with tarfile.open(_tarball(tmp_path, source, config, tags=tags)) as tar:
            tar.extractall(layout)
            index = json.load(tar.extractfile("index.json"))
        Path(layout, f"index-{tags[0]}.json").write_text(json.dumps(index))
    merged = [m for p in sorted(layout.glob("index-*.json")) for m in json.loads(p.read_text())["manifests"]]
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": merged}))
    entries = read_archive(str(layout), blobs)
    assert {e.config: [n.familiar() for n in e.names] for e in entries} == {
        first: ["one:1", "one:latest"], second: ["two:2"]}
    with ImageArchive(str(layout), BlobStore(str(tmp_path / "lazy"))) as archive:
        assert len(archive.entries) == 2
        assert os.listdir(archive.blobs.dir) == [], "nothing is imported until asked"


def _first_layer(path: str):
    def change(items: list) -> list:
        items[0]["Layers"][0] = path
        return items
    return change


@pytest.mark.parametrize("change, message", [
    (_first_layer("../../etc/passwd"), "leads outside the archive"),
    (_first_layer("blobs/../../x"), "leads outside the archive"),
    (_first_layer("/x/../nothing"), "nothing is missing from the archive"),
    (_first_layer("blobs"), "blobs is not a regular file"),
    (lambda items: None, "not a list of images"),
    (lambda items: [{"Config": items[0]["Config"], "Layers": []}], "lists 0 layers"),
    (lambda items: [dict(items[0], RepoTags=["app@sha256:" + "a" * 64])], "is not a NAME:TAG tag"),
    (lambda items: [dict(items[0], RepoTags=["App:1"])], "invalid tag 'App:1'"),
])
def test_malformed_docker_manifests_are_refused(tmp_path: Path, source: BlobStore, blobs: BlobStore,
                                                change, message) -> None:
    config = make_image(source, *FILES)
    archive = _tarball(tmp_path, source, config)
    broken = tmp_path / "broken.tar"
    _rewrite(archive, broken, {"oci-layout": None, "index.json": None,
                               "manifest.json": lambda data: dumps(change(json.loads(data)))})
    with pytest.raises(LayerError, match=message):
        read_archive(str(broken), blobs)
    assert stored_files(blobs) == set()


@pytest.mark.parametrize("member", ["manifest.json", "index.json"])
def test_json_nested_too_deep_is_refused(tmp_path: Path, source: BlobStore, blobs: BlobStore,
                                         member: str) -> None:
    """Found by tests/fuzz/fuzz_archive.py: json's RecursionError escaped as a traceback."""
    archive = _tarball(tmp_path, source, make_image(source, *FILES))
    broken = tmp_path / "broken.tar"
    docker_view = {"oci-layout": None, "index.json": None} if member == "manifest.json" else {}
    _rewrite(archive, broken, {**docker_view, member: lambda data: b"[" * 100_000})
    with pytest.raises(LayerError, match=f"{member} is not valid JSON"):
        read_archive(str(broken), blobs)
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_config(b"[" * 100_000)


def test_things_that_are_no_archive(tmp_path: Path, blobs: BlobStore) -> None:
    plain = tmp_path / "plain.tar"
    with tarfile.open(plain, "w") as tar:
        tar.add(__file__, "test.py")
    with pytest.raises(LayerError, match="neither manifest.json nor oci-layout"):
        read_archive(str(plain), blobs)
    text = tmp_path / "notes.txt"
    text.write_text("not a tar at all\n" * 100)
    with pytest.raises(LayerError, match="not a tar archive"):
        read_archive(str(text), blobs)
    assert stored_files(blobs) == set()
    with pytest.raises(FileNotFoundError):
        read_archive(str(tmp_path / "missing.tar"), blobs)


def test_a_missing_layer_file(tmp_path: Path, source: BlobStore, blobs: BlobStore) -> None:
    config = make_image(source, *FILES)
    layout = tmp_path / "layout"
    with tarfile.open(_tarball(tmp_path, source, config)) as tar:
        tar.extractall(layout)
    os.unlink(layout / "blobs/sha256" / json.loads(config)["rootfs"]["diff_ids"][0][7:])
    with pytest.raises(LayerError, match="is missing"):
        read_archive(str(layout), blobs)


@pytest.mark.parametrize("replace", [lambda path: path.symlink_to("/dev/zero"), os.mkfifo],
                         ids=["link to /dev/zero", "fifo"])
def test_a_layout_blob_that_is_no_regular_file(tmp_path: Path, source: BlobStore,
                                               blobs: BlobStore, replace) -> None:
    """Found by tests/fuzz/fuzz_archive.py: reading /dev/zero never ended (a FIFO never began)."""
    config = make_image(source, *FILES)
    layout = tmp_path / "layout"
    with tarfile.open(_tarball(tmp_path, source, config)) as tar:
        tar.extractall(layout)
    blob = layout / "blobs/sha256" / json.loads(config)["rootfs"]["diff_ids"][0][7:]
    blob.unlink()
    replace(blob)
    with pytest.raises(LayerError, match="is not a regular file"):
        read_archive(str(layout), blobs)


# -- real tools --------------------------------------------------------------------------

@pytest.fixture
def docker_images():
    require(docker_available(), "a running Docker engine")
    images = DockerImages()
    yield images
    images.cleanup()


def docker_saved_image(tmp_path: Path, images: DockerImages) -> tuple[Path, str]:
    """A tiny image made by `docker import` from a directory, saved by `docker save`."""
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc/hello").write_text("hello from docker\n")
    (root / "bin").mkdir()
    (root / "bin/link").symlink_to("/etc/hello")
    rootfs = tmp_path / "rootfs.tar"
    with tarfile.open(rootfs, "w") as tar:
        for child in sorted(root.iterdir()):
            tar.add(child, child.name)
    name = images.name("pybuild-load")
    docker("import", "-c", 'CMD ["/bin/sh"]', str(rootfs), name)
    saved = tmp_path / "saved.tar"
    docker("save", "-o", str(saved), name)
    return saved, name


def test_real_docker_save_output(tmp_path: Path, docker_images: DockerImages,
                                 blobs: BlobStore) -> None:
    saved, name = docker_saved_image(tmp_path, docker_images)
    inspect = docker_images.inspect(name)
    [entry] = read_archive(str(saved), blobs)
    assert [n.familiar() for n in entry.names] == [name]
    assert entry.image_id == inspect["Id"]
    assert list(entry.diff_ids) == inspect["RootFS"]["Layers"]
    with tarfile.open(blobs.path(entry.diff_ids[0])) as layer:
        assert layer.extractfile("etc/hello").read() == b"hello from docker\n"


def test_a_legacy_archive_whose_shared_layer_is_a_symlink(tmp_path: Path,
                                                          docker_images: DockerImages,
                                                          blobs: BlobStore) -> None:
    """Docker before 25 writes a layer shared by two images once; the second image's
    `<id>/layer.tar` is a symlink to the first's."""
    saved, base = docker_saved_image(tmp_path, docker_images)
    context = tmp_path / "context"
    context.mkdir()
    (context / "x").write_text("data\n")
    (context / "Dockerfile").write_text(f"FROM {base}\nCOPY x /x\n")
    child = docker_images.name("pybuild-load-child")
    docker("build", "-q", "--network", "none", "-t", child, str(context))
    both = tmp_path / "both.tar"
    docker("save", "-o", str(both), base, child)
    with tarfile.open(both) as tar:
        assert any(member.issym() for member in tar.getmembers())
    with ImageArchive(str(both), blobs) as archive:
        [entry] = [e for e in archive.entries if [n.familiar() for n in e.names] == [child]]
        archive.import_layers([entry])
    assert list(entry.diff_ids) == docker_images.inspect(child)["RootFS"]["Layers"]
    assert all(blobs.has(diff_id) for diff_id in entry.diff_ids)


def skopeo(*args: str) -> None:
    process = subprocess.run(["skopeo", *args], capture_output=True, timeout=300)
    assert process.returncode == 0, process.stderr.decode()


def test_an_oci_layout_made_by_skopeo(tmp_path: Path, source: BlobStore, blobs: BlobStore) -> None:
    """skopeo gzips the layers and rewrites the config; ref.name is only the tag."""
    require(shutil.which("skopeo") is not None, "skopeo")
    config = make_image(source, *FILES)
    archive = _tarball(tmp_path, source, config)
    layout = tmp_path / "oci"
    skopeo("copy", "--quiet", f"docker-archive:{archive}", f"oci:{layout}:v1")
    skopeo("copy", "--quiet", "--dest-compress-format", "zstd", f"docker-archive:{archive}",
           f"oci-archive:{tmp_path / 'oci.tar'}:v2")
    [entry] = read_archive(str(layout), blobs)
    assert entry.names == () and entry.ref_names == ("v1",)
    assert entry.diff_ids == tuple(json.loads(config)["rootfs"]["diff_ids"])
    media_types = {layer["mediaType"] for layer in _manifest(layout)["layers"]}
    assert media_types == {"application/vnd.oci.image.layer.v1.tar+gzip"}
    assert_layers_stored(blobs, source, entry.diff_ids)
    fresh = BlobStore(str(tmp_path / "fresh"))
    [entry] = read_archive(str(tmp_path / "oci.tar"), fresh)
    assert entry.ref_names == ("v2",)
    assert_layers_stored(fresh, source, entry.diff_ids)


# -- helpers -----------------------------------------------------------------------------

def _tarball(tmp_path: Path, source: BlobStore, config: bytes,
             compression: Compression = Compression.NONE, tags: tuple[str, ...] = ("app:1",)) -> Path:
    path = tmp_path / f"{sha256_digest(config)[7:19]}-{compression.value}.tar"
    write_tarball(path, source, config, tags, compression)
    return path


def _replace_manifest(layout: Path, manifest: dict) -> None:
    """Make `manifest` the layout's only image manifest, tagged app:1."""
    data = dumps(manifest)
    (layout / "blobs/sha256" / sha256_digest(data)[7:]).write_bytes(data)
    (layout / "index.json").write_bytes(dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": sha256_digest(data), "size": len(data),
         "annotations": {"org.opencontainers.image.ref.name": "1"}}]}))


def _manifest(layout: Path) -> dict:
    index = json.loads((layout / "index.json").read_text())
    return json.loads((layout / "blobs/sha256" / index["manifests"][0]["digest"][7:]).read_text())


def _snapshot_temps(blobs: BlobStore) -> list[Path]:
    """Snapshots begun and not finished or removed, in the cache's temp directories."""
    return list(Path(blobs.root).glob("tmp/*/snapshot-*"))


def _flip_a_byte(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0x20]) + data[middle + 1:]


def _rewrite(archive: Path, out: Path, changes: dict) -> None:
    """A copy of a tar with members changed by a function of their bytes, or dropped (None)."""
    with tarfile.open(archive) as full, tarfile.open(out, "w") as copy:
        for member in full.getmembers():
            change = changes.get(member.name, lambda data: data)
            if change is None:
                continue
            if not member.isfile():
                copy.addfile(member)
                continue
            data = change(full.extractfile(member).read())
            member.size = len(data)
            copy.addfile(member, io.BytesIO(data))
