"""layers.compression: blobs that every reader accepts, digests of the bytes really written, and
sniffing of whatever compression an input comes in."""
from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os
import random
import shutil
import subprocess
import zlib

import pytest
import zstandard

from layers.compression import (
    CHUNK,
    BlobDigest,
    Compression,
    compress_file,
    decompressing_reader,
)
from tests.support import require


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> bytes:
    """About 5 MiB mixing text-like runs and noise, so blocks compress unevenly and the
    dictionary carried between gzip blocks matters."""
    rnd = random.Random(42)
    words = [bytes(rnd.choice(b"abcdefghij ") for _ in range(rnd.randint(3, 12)))
             for _ in range(500)]
    parts = []
    while sum(map(len, parts)) < 5 * CHUNK + 12345:
        noise = rnd.random() < 0.2
        parts.append(os.urandom(4096) if noise else b" ".join(rnd.choices(words, k=800)))
    return b"".join(parts)


def compress(tmp_path, data: bytes, compression: Compression,
             name: str = "blob") -> tuple[bytes, BlobDigest]:
    src, dst = tmp_path / f"{name}.src", tmp_path / name
    src.write_bytes(data)
    digest = compress_file(str(src), str(dst), compression)
    return dst.read_bytes(), digest


def read_all(stream) -> bytes:
    chunks = []
    while chunk := stream.read(65536):
        chunks.append(chunk)
    return b"".join(chunks)


class Unseekable(io.RawIOBase):
    """A pipe-like source that yields a few bytes per read: no seek, no peek."""

    def __init__(self, data: bytes, step: int = 3) -> None:
        self._data, self._step = data, step

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self._step, len(self._data))
        buffer[:n] = self._data[:n]
        self._data = self._data[n:]
        return n


@pytest.mark.parametrize("compression", list(Compression))
def test_round_trip_and_digest_of_the_written_bytes(tmp_path, sample, compression):
    blob, digest = compress(tmp_path, sample, compression)
    assert digest == BlobDigest("sha256:" + hashlib.sha256(blob).hexdigest(), len(blob))
    assert read_all(decompressing_reader(io.BytesIO(blob))) == sample
    if compression is Compression.NONE:
        assert blob == sample
    else:
        assert len(blob) < len(sample)


@pytest.mark.parametrize("compression", list(Compression))
def test_empty_input(tmp_path, compression):
    blob, digest = compress(tmp_path, b"", compression)
    assert digest.size == len(blob)
    assert read_all(decompressing_reader(io.BytesIO(blob))) == b""


def test_gzip_is_one_reproducible_member_any_reader_accepts(tmp_path, sample):
    blob, digest = compress(tmp_path, sample, Compression.GZIP)
    assert blob[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # no name, mtime 0
    assert gzip.decompress(blob) == sample
    single = zlib.decompressobj(31)  # stops at the end of the first member
    assert single.decompress(blob) == sample and single.eof and single.unused_data == b""
    gunzip = subprocess.run(["gzip", "-dc"], input=blob, capture_output=True, check=True)
    assert gunzip.stdout == sample
    subprocess.run(["gzip", "-t"], input=blob, check=True)
    again, digest_again = compress(tmp_path, sample, Compression.GZIP, name="again")
    assert (again, digest_again) == (blob, digest)


def test_gzip_is_not_much_bigger_than_serial_gzip(tmp_path, sample):
    blob, _ = compress(tmp_path, sample, Compression.GZIP)
    serial = gzip.compress(sample, compresslevel=1, mtime=0)
    assert len(blob) < len(serial) * 1.03  # a text run after stored noise starts without history


def noise_and_text(rnd: random.Random, pattern: str) -> bytes:
    """64 KiB spans, `n` noise and `t` text, in the order of `pattern`; `m` mixes both in one
    span, `z` is zeros. Spans of text repeat earlier text, so history carried across a stored
    run matters."""
    text = b"".join(rnd.choice([b"layer ", b"tar ", b"file ", b"data\n"]) for _ in range(20000))
    spans = {"n": lambda: rnd.randbytes(65536), "t": lambda: text[:65536],
             "m": lambda: rnd.randbytes(40000) + text[:25536], "z": lambda: bytes(65536)}
    return b"".join(spans[kind]() for kind in pattern)


@pytest.mark.parametrize("pattern", ["nnnnnnnnnnnnnnnnn", "tnnnnnnnnnnnnnnnnt", "ntntntntntntntntnt",
                                     "nmnmnz" * 4, "t" * 17 + "n" * 16 + "t" * 3, "n"])
def test_gzip_stores_noise_and_deflates_the_rest_exactly(tmp_path, pattern):
    data = noise_and_text(random.Random(pattern), pattern)
    blob, _ = compress(tmp_path, data, Compression.GZIP)
    assert gzip.decompress(blob) == data
    gunzip = subprocess.run(["gzip", "-dc"], input=blob, capture_output=True, check=True)
    assert gunzip.stdout == data
    noise = 65536 * (pattern.count("n") + pattern.count("m"))
    compressible = len(data) - noise
    assert len(blob) < noise * 1.001 + compressible * 0.3 + 1024


def small_files(kind: str, size: int) -> list[bytes]:
    """48 pieces of `size` bytes of `kind`, as the small files of a layer's tar come: noise
    (already compressed files), machine code, UTF-8 text of a non-Latin script."""
    rnd = random.Random(kind)
    if kind == "noise":
        return [rnd.randbytes(size) for _ in range(48)]
    if kind == "machine code":
        with open(shutil.which("bash") or shutil.which("sh"), "rb") as handle:
            code = handle.read()
        middle = len(code) // 2 - 24 * size
        return [code[middle + n * size:middle + (n + 1) * size] for n in range(48)]
    words = ["镜像", "层", "数据", "文件", "压缩", "注册表", "构建", "。", "\n"]
    text = "".join(rnd.choice(words) for _ in range(48 * size // 2)).encode()
    return [text[n * size:(n + 1) * size] for n in range(48)]


@pytest.mark.parametrize("kind, size, stored", [
    ("noise", 8192, True), ("noise", 2048, True), ("noise", 512, True),
    ("machine code", 8192, False), ("machine code", 2048, False),
    ("utf-8 text", 8192, False), ("utf-8 text", 2048, False)])
def test_gzip_judges_every_small_file_alone(tmp_path, kind, size, stored):
    """Pieces of one kind between text of the same size, as a tar's small files lie (a 4 KiB
    span holds two of 2 KiB): each piece of noise is stored as it is (its bytes appear in the
    blob), anything else is deflated (they do not)."""
    rnd = random.Random(7)
    text = b"".join(rnd.choice([b"layer ", b"tar ", b"file ", b"data\n"]) for _ in range(3000))
    pieces = small_files(kind, size)
    data = b"".join(text[:size] + piece for piece in pieces)
    blob, _ = compress(tmp_path, data, Compression.GZIP)
    assert gzip.decompress(blob) == data
    assert [piece in blob for piece in pieces] == [stored] * len(pieces)


def test_gzip_bytes_do_not_depend_on_the_number_of_cores(tmp_path, sample, monkeypatch):
    digests = set()
    for cores in (1, 2, 3, 8):
        monkeypatch.setattr(os, "cpu_count", lambda cores=cores: cores)
        digests.add(compress(tmp_path, sample, Compression.GZIP, name=f"cores{cores}")[1])
    assert len(digests) == 1


def test_zstd_reads_with_the_zstd_tool_and_is_reproducible(tmp_path, sample):
    blob, digest = compress(tmp_path, sample, Compression.ZSTD)
    assert blob[:4] == b"\x28\xb5\x2f\xfd"
    assert compress(tmp_path, sample, Compression.ZSTD, name="again")[1] == digest
    require(shutil.which("zstd") is not None, "the zstd tool (package zstd)")
    unzstd = subprocess.run(["zstd", "-dc"], input=blob, capture_output=True, check=True)
    assert unzstd.stdout == sample


def skippable_frame(payload: bytes) -> bytes:
    return b"\x5a\x2a\x4d\x18" + len(payload).to_bytes(4, "little") + payload


@pytest.mark.parametrize("encode", [
    pytest.param(lambda d: gzip.compress(d, mtime=0), id="gzip"),
    pytest.param(lambda d: gzip.compress(d[:1000]) + gzip.compress(d[1000:]), id="gzip-members"),
    pytest.param(bz2.compress, id="bzip2"),
    pytest.param(lzma.compress, id="xz"),
    pytest.param(lambda d: zstandard.ZstdCompressor().compress(d), id="zstd"),
    pytest.param(lambda d: skippable_frame(b"meta") + zstandard.ZstdCompressor().compress(d),
                 id="zstd-skippable"),
    pytest.param(lambda d: d, id="plain"),
])
def test_sniffing_from_an_unseekable_stream(sample, encode):
    data = sample[:300_000]
    assert read_all(decompressing_reader(Unseekable(encode(data)))) == data


@pytest.mark.parametrize("data", [b"", b"a", b"\x1f", b"BZ", b"ustar"])
def test_short_plain_inputs_pass_through(data):
    assert read_all(decompressing_reader(io.BytesIO(data))) == data


def test_closing_the_reader_leaves_the_source_open():
    source = io.BytesIO(gzip.compress(b"payload"))
    reader = decompressing_reader(source)
    assert reader.read() == b"payload"
    reader.close()
    assert not source.closed


def test_media_types():
    assert Compression.GZIP.media_type == "application/vnd.oci.image.layer.v1.tar+gzip"
    assert Compression.ZSTD.media_type == "application/vnd.oci.image.layer.v1.tar+zstd"
    assert Compression.NONE.media_type == "application/vnd.oci.image.layer.v1.tar"
    assert Compression.GZIP.docker_media_type == "application/vnd.docker.image.rootfs.diff.tar.gzip"
    assert Compression.NONE.docker_media_type == "application/vnd.docker.image.rootfs.diff.tar"
    assert Compression.ZSTD.docker_media_type is None
