"""Coverage-guided fuzzing of image archive reading, `layers.archive_reader.read_archive` (atheris):

    python3 tests/fuzz/fuzz_archive.py [CORPUS_DIR...] [-max_total_time=SECONDS] [libFuzzer options]

Every input starts from a valid archive, both a `docker save` archive and an OCI layout, of one
image of one layer, and the input's bytes choose what to break: a value anywhere in index.json,
a manifest, the config or manifest.json replaced by another (of another type, a path out of the
archive, a digest of something else, deep nesting), a key dropped, a file dropped, replaced by
bytes or by a symlink; then, or not, the digests and sizes are made to agree again, so the reader
gets past its digest checks to what the documents say. The archive is a tar, a gzipped tar or a
directory. The layers are unpacked into snapshots as they are read, as `pybuild load` does.
Findings: any exception but LayerError, a file written outside the blob and snapshot stores.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile

import atheris

with atheris.instrument_imports():
    from layers.archive_reader import read_archive
    from layers.blobstore import BlobStore
    from layers.errors import LayerError
    from layers.snapshots import SnapshotStore

# Under $TMPDIR, left there: libFuzzer ends the process without Python's clean-up.
_WORK = tempfile.mkdtemp(prefix="fuzz-archive-")
_DIGEST = "sha256:" + "0" * 64
_VALUES = [None, True, 0, -1, 1 << 70, 1.5, "", "x", "amd64", "linux", _DIGEST, "sha256:abc",
           "md5:" + "0" * 32, "../../../../etc/passwd", "/etc/passwd", "blobs/sha256/..",
           "layer.tar", "busybox:1", "Busybox:1", "a@" + _DIGEST, [], {}, ["x"], [None], {"x": 1},
           "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
           "application/vnd.oci.image.config.v1+json", "\udcff", "[" * 3000]
_DEEP = "[" * 100_000


def _layer() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("hello")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"hi\n"))
    return out.getvalue()


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _documents() -> dict[str, object]:
    """The documents of the valid archive, by role."""
    layer = _layer()
    return {
        "layer": layer,
        "config": {"architecture": "amd64", "os": "linux",
                   "rootfs": {"type": "layers", "diff_ids": [_sha(layer)]}},
        "manifest": {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                     "config": {"mediaType": "application/vnd.oci.image.config.v1+json"},
                     "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar"}]},
        "index": {"schemaVersion": 2, "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json",
             "annotations": {"io.containerd.image.name": "docker.io/library/fuzz:1",
                             "org.opencontainers.image.ref.name": "1"}}]},
        "docker": [{"Config": "", "RepoTags": ["fuzz:1"], "Layers": [""]}],
        "oci-layout": {"imageLayoutVersion": "1.0.0"},
    }


def _mutate(provider, value, depth: int = 0):
    """`value` with one place in it changed, dropped or left alone."""
    if depth > 4 or not isinstance(value, (dict, list)) or not value or provider.ConsumeIntInRange(0, 3) == 0:
        choice = provider.ConsumeIntInRange(0, len(_VALUES) + 1)
        if choice == len(_VALUES):
            return _DEEP
        return _VALUES[choice] if choice < len(_VALUES) else provider.ConsumeUnicodeNoSurrogates(16)
    keys = list(value) if isinstance(value, dict) else list(range(len(value)))
    key = keys[provider.ConsumeIntInRange(0, len(keys) - 1)]
    copy = dict(value) if isinstance(value, dict) else list(value)
    if provider.ConsumeIntInRange(0, 5) == 0:
        del copy[key]
    else:
        copy[key] = _mutate(provider, copy[key], depth + 1)
    return copy


def _encode(value) -> bytes:
    if isinstance(value, bytes):
        return value
    text = value if value is _DEEP else json.dumps(value)
    return text.encode("utf-8", "surrogateescape")


def _archive(provider) -> dict[str, tuple[str, bytes]]:
    """Files of the archive: name -> (kind "file" or "symlink", content or target)."""
    docs = _documents()
    for _ in range(provider.ConsumeIntInRange(0, 3)):
        role = provider.PickValueInList(sorted(docs))
        docs[role] = _mutate(provider, docs[role]) if role != "layer" else \
            provider.ConsumeBytes(provider.ConsumeIntInRange(0, 600))
    relink = provider.ConsumeBool()
    layer, config = _encode(docs["layer"]), _encode(docs["config"])
    manifest = docs["manifest"]
    if relink and isinstance(manifest, dict):
        manifest = _described(manifest, "config", config)
        if isinstance(manifest.get("layers"), list) and manifest["layers"]:
            manifest["layers"] = [_with_digest(manifest["layers"][0], layer)] + manifest["layers"][1:]
    manifest_bytes = _encode(manifest)
    index = docs["index"]
    if relink and isinstance(index, dict) and isinstance(index.get("manifests"), list) and index["manifests"]:
        index = dict(index, manifests=[_with_digest(index["manifests"][0], manifest_bytes)]
                     + index["manifests"][1:])
    docker = docs["docker"]
    if relink and isinstance(docker, list) and docker and isinstance(docker[0], dict):
        docker = [dict(docker[0], Config=f"blobs/sha256/{_sha(config)[7:]}",
                       Layers=[f"blobs/sha256/{_sha(layer)[7:]}"])] + docker[1:]
    files = {"oci-layout": ("file", _encode(docs["oci-layout"])), "index.json": ("file", _encode(index)),
             "manifest.json": ("file", _encode(docker))}
    for blob in (layer, config, manifest_bytes):
        files[f"blobs/sha256/{_sha(blob)[7:]}"] = ("file", blob)
    for _ in range(provider.ConsumeIntInRange(0, 2)):
        name = provider.PickValueInList(sorted(files))
        action = provider.ConsumeIntInRange(0, 2)
        if action == 0:
            del files[name]
        elif action == 1:
            files[name] = ("symlink", provider.PickValueInList(
                ["/etc/passwd", "../../../etc/passwd", "index.json", name, "blobs", "/dev/zero"]))
        else:
            files[name] = ("file", provider.ConsumeBytes(provider.ConsumeIntInRange(0, 300)))
    return files


def _with_digest(descriptor, data: bytes):
    if not isinstance(descriptor, dict):
        return descriptor
    return dict(descriptor, digest=_sha(data), size=len(data))


def _described(document: dict, key: str, data: bytes) -> dict:
    return dict(document, **{key: _with_digest(document.get(key), data)}) if key in document else document


def _write(files: dict[str, tuple[str, bytes]], form: int) -> str:
    """The archive as a tar (form 0), a gzipped tar (1) or a directory (2)."""
    if form == 2:
        root = os.path.join(_WORK, "layout")
        for name, (kind, data) in files.items():
            path = os.path.join(root, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if kind == "symlink":
                os.symlink(data, path)
            else:
                with open(path, "wb") as handle:
                    handle.write(data)
        return root
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, (kind, data) in files.items():
            info = tarfile.TarInfo(name)
            if kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, data
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    path = os.path.join(_WORK, "archive.tar")
    with open(path, "wb") as handle:
        handle.write(gzip.compress(out.getvalue(), 1) if form == 1 else out.getvalue())
    return path


def _reset() -> None:
    for name in os.listdir(_WORK):
        path = os.path.join(_WORK, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)


def one_input(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    files = _archive(provider)
    _reset()
    path = _write(files, provider.ConsumeIntInRange(0, 2))
    cache = os.path.join(_WORK, "cache")
    try:
        read_archive(path, BlobStore(cache), SnapshotStore(cache))
    except LayerError as error:
        str(error)
    made = sorted(os.listdir(_WORK))
    if made not in (["archive.tar", "cache"], ["cache", "layout"]):
        raise AssertionError(f"written beside the blob store: {made}")
    if sorted(os.listdir(cache)) not in (["blobs", "snapshots"], ["blobs", "snapshots", "tmp"]):
        # tmp: layers/scratch.py
        raise AssertionError(f"written in the cache root: {os.listdir(cache)}")


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
