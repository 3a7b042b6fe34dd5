"""ADD of local tar archives, every compression pybuild reads, and `--unpack=false`. Docker 20.10
cannot ADD a zstd archive or take --unpack, so these are pybuild's own expectations (the plain,
gzip, bzip2 and xz cases are also in the conformance corpus, against Docker)."""
from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import tarfile
from pathlib import Path

import pytest
import zstandard

from tests.support import pybuild

PAYLOAD = {"pkg/bin/tool": b"#!/bin/sh\necho tool\n", "pkg/README": b"read me\n"}
COMPRESSIONS = {
    "tar": lambda data: data,
    "tar.gz": gzip.compress,
    "tar.bz2": bz2.compress,
    "tar.xz": lzma.compress,
    "tar.zst": lambda data: zstandard.ZstdCompressor().compress(data),
}


def _archive() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in PAYLOAD.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid, info.gid = len(data), 0o750, 7, 8
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _layer_files(image: Path) -> dict[str, tuple[bytes, int, int]]:
    """The regular files of the image's last layer: content and owner."""
    with tarfile.open(image) as outer:
        layer = json.load(outer.extractfile("manifest.json"))[0]["Layers"][-1]
        with tarfile.open(fileobj=outer.extractfile(layer)) as inner:
            return {member.name: (inner.extractfile(member).read(), member.uid, member.gid)
                    for member in inner if member.isfile()}


def _build(tmp_path: Path, name: str, data: bytes, flags: str = "") -> dict:
    context = tmp_path / "context"
    context.mkdir()
    (context / name).write_bytes(data)
    (context / "Dockerfile").write_text(f"FROM scratch\nADD {flags} {name} /opt/\n")
    out = tmp_path / "image.tar"
    result = pybuild("-o", str(out), str(context),
                     env={"PYBUILD_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr
    return _layer_files(out)


@pytest.mark.parametrize("suffix", COMPRESSIONS)
def test_a_local_archive_is_extracted_whatever_its_compression(tmp_path: Path, suffix: str) -> None:
    files = _build(tmp_path, f"payload.{suffix}", COMPRESSIONS[suffix](_archive()))
    assert files == {f"opt/{name}": (data, 7, 8) for name, data in PAYLOAD.items()}


@pytest.mark.parametrize("suffix", ["tar", "tar.zst"])
def test_unpack_false_copies_the_archive_as_a_file(tmp_path: Path, suffix: str) -> None:
    data = COMPRESSIONS[suffix](_archive())
    files = _build(tmp_path, f"payload.{suffix}", data, "--unpack=false")
    assert files == {f"opt/payload.{suffix}": (data, 0, 0)}
