"""layers.registry.compress_upload against a real registry (behind the recording, fault-injecting
proxy): a layer compressed for a push streams to the registry in one chunked PATCH while it is
written to the store, and a streamed upload that fails leaves the blob for the ordinary push."""
from __future__ import annotations

import gzip
import hashlib
import io
import random

import pytest

from layers.blobstore import BlobStore
from layers.compression import CHUNK, Compression
from layers.reference import Reference
from layers.registry.compress_upload import push_compressing
from layers.registry.pull import fetch_blob
from layers.registry.push import push_blob
from layers.registry.variants import known_layer
from tests.registry_support import (  # noqa: F401 (fixtures)
    layer_tar,
    proxy,
    registry,
    session,
    unique_repository,
)


@pytest.fixture
def stored(tmp_path) -> tuple[BlobStore, str, bytes]:
    """A store holding one layer of several compression blocks: text files (which deflate) and
    random ones (whose spans are stored), so the stream has both kinds of run."""
    rnd = random.Random(7)
    text = b"".join(rnd.choice([b"layer ", b"blob ", b"push ", b"\n"]) for _ in range(400_000))
    files = {f"text{n}.txt": text[n * 9000:] for n in range(3)}
    files.update({f"noise{n}.bin": rnd.randbytes(700_000) for n in range(3)})
    tar = layer_tar(files)
    assert len(tar) > 3 * CHUNK
    store = BlobStore(str(tmp_path / "store"))
    return store, store.put_bytes(tar), tar


def registry_blob(client, ref: Reference, digest: str) -> bytes:
    out = io.BytesIO()
    fetch_blob(client, ref, digest, out)
    return out.getvalue()


def test_a_layer_compressed_for_a_push_streams_while_it_is_made(proxy, stored):
    store, diff_id, tar = stored
    client = session(proxy.address)
    ref = Reference(proxy.address, unique_repository(), "1")
    layer = push_compressing(client, ref, store, diff_id, Compression.GZIP)

    kept = known_layer(store, diff_id, Compression.GZIP)  # for the next push
    assert kept is not None and (kept.digest, kept.size) == (layer.digest, layer.size)
    with layer.open() as handle:
        blob = handle.read()
    assert layer.digest == "sha256:" + hashlib.sha256(blob).hexdigest() and layer.size == len(blob)
    assert gzip.decompress(blob) == tar
    assert registry_blob(client, ref, layer.digest) == blob
    [patch] = proxy.requests("PATCH")
    assert patch.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in patch.headers
    [put] = proxy.requests("PUT")
    assert f"digest={layer.digest.replace(':', '%3A')}" in put.path
    assert put.headers.get("Content-Length") == "0"


@pytest.mark.parametrize("fault", [("POST", "503"), ("PATCH", "503"), ("PATCH", "lose-answer"),
                                   ("PUT", "503")])
def test_a_failed_streamed_upload_leaves_the_blob_for_the_ordinary_push(proxy, stored, fault):
    store, diff_id, tar = stored
    method, kind = fault
    proxy.fault(method, "/blobs/uploads/", kind, times=9)  # past the retries
    client = session(proxy.address)
    ref = Reference(proxy.address, unique_repository(), "1")
    layer = push_compressing(client, ref, store, diff_id, Compression.GZIP)

    with layer.open() as handle:
        blob = handle.read()
    assert gzip.decompress(blob) == tar
    proxy.faults.clear()
    push_blob(client, ref, layer.digest, layer.size, layer.open)
    assert registry_blob(client, ref, layer.digest) == blob
    uploads = [seen for seen in proxy.requests("PUT", "/blobs/uploads/")
               if seen.headers.get("Content-Length") == str(layer.size)]
    assert len(uploads) == 1  # the finished blob went up whole, after the stream had failed


def test_the_streamed_blob_is_the_one_compress_file_makes(tmp_path, registry, stored):
    store, diff_id, tar = stored
    client = session(registry.address)
    streamed = push_compressing(client, Reference(registry.address, unique_repository(), "1"),
                                store, diff_id, Compression.GZIP)
    again = BlobStore(str(tmp_path / "again"))
    again.put_bytes(tar)
    pushed_again = push_compressing(client,
                                    Reference(registry.address, unique_repository(), "1"),
                                    again, diff_id, Compression.GZIP)
    assert (pushed_again.digest, pushed_again.size) == (streamed.digest, streamed.size)
