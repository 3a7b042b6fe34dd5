"""Go binaries' build info in the SBOM: read from handcrafted ELF files (both formats, both word
sizes and byte orders, and hostile ones), from the Go-built docker client on this machine, and
end to end from an image built with --sbom=true."""
from __future__ import annotations

import json
import shutil
import struct
import subprocess
import tarfile
import uuid
from dataclasses import dataclass

import pytest

from builder.supplychain.gobuildinfo import BuildInfo, Module, go_build_info
from builder.supplychain.packages import image_packages
from tests.support import pybuild, require
from tests.test_unpack import tar_of

_START = b"0w\xaf\x0c\x92t\x08\x02A\xe1\xc1\x07\xe6\xd6\x18\xe6"
_END = b"\xf92C1\x86\x18 r\x00\x82B\x10A\x16\xd8\xf2"
MODULES = (b"path\texample.com/app\n"
           b"mod\texample.com/app\tv1.2.3\th1:main=\n"
           b"dep\tgithub.com/pkg/errors\tv0.9.1\th1:errs=\n"
           b"dep\tgolang.org/x/sys\tv0.1.0\th1:old=\n"
           b"=>\tgithub.com/fork/sys\tv0.2.0\th1:new=\n"
           b"build\t-compiler=gc\n")
INFO = BuildInfo("go1.22.5", Module("example.com/app", "v1.2.3", "h1:main="),
                 (Module("github.com/pkg/errors", "v0.9.1", "h1:errs="),
                  Module("github.com/fork/sys", "v0.2.0", "h1:new=")))
BUILDINFO_ADDRESS, RODATA_ADDRESS = 0x10000, 0x20000


def uvarint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes(out + bytes([value]))


def header(width: int, flags: int) -> bytes:
    return (b"\xff Go buildinf:" + bytes([width, flags])).ljust(32, b"\0")


def inline(version: bytes = b"go1.22.5", modules: bytes = _START + MODULES + _END) -> bytes:
    return header(8, 2) + uvarint(len(version)) + version + uvarint(len(modules)) + modules


def elf(sections: list[tuple[bytes, int, bytes]], wide: bool = True, big: bool = False,
        shnum: int | None = None, shoff_extra: int = 0) -> bytes:
    """An ELF file holding `sections` (name, virtual address, data) and a name table."""
    order = ">" if big else "<"
    names = b"\0.shstrtab\0" + b"".join(name + b"\0" for name, _, _ in sections)
    body, headers = bytearray(), [(0, 0, 0, 0, 0)]
    start = 64 if wide else 52
    for index, (name, address, data) in enumerate([(b".shstrtab", 0, names)] + sections):
        headers.append((names.index(b"\0" + name + b"\0") + 1, 1, address,
                        start + len(body), len(data)))
        body += data
    layout = order + ("IIQQQQIIQQ" if wide else "IIIIIIIIII")
    table = b"".join(struct.pack(layout, name, kind, 0, address, offset, size, 0, 0, 0, 0)
                     for name, kind, address, offset, size in headers)
    count = len(headers) if shnum is None else shnum
    ident = b"\x7fELF" + bytes([2 if wide else 1, 2 if big else 1, 1]) + bytes(9)
    shoff = start + len(body) + shoff_extra
    if wide:
        head = ident + struct.pack(order + "HHIQQQIHHHHHH", 2, 62, 1, 0, 0, shoff, 0, 64, 0, 0,
                                   struct.calcsize(layout), count, 1)
    else:
        head = ident + struct.pack(order + "HHIIIIIHHHHHH", 2, 3, 1, 0, 0, shoff, 0, 52, 0, 0,
                                   struct.calcsize(layout), count, 1)
    return head + bytes(body) + table


def pointer_format(wide: bool, big: bool, version: bytes = b"go1.16.15",
                   modules: bytes = _START + MODULES + _END,
                   version_length: int | None = None) -> bytes:
    """Go < 1.18: the header points at two string headers in .rodata, which point at text."""
    order, word = (">" if big else "<"), ("Q" if wide else "I")
    width = struct.calcsize(word)
    strings_at = RODATA_ADDRESS + 4 * width
    rodata = struct.pack(order + word * 4, strings_at,
                         len(version) if version_length is None else version_length,
                         strings_at + len(version), len(modules)) + version + modules
    info = (b"\xff Go buildinf:" + bytes([width, 1 if big else 0])
            + struct.pack(order + word * 2, RODATA_ADDRESS, RODATA_ADDRESS + 2 * width))
    return elf([(b".go.buildinfo", BUILDINFO_ADDRESS, info.ljust(32, b"\0")),
                (b".rodata", RODATA_ADDRESS, rodata)], wide=wide, big=big)


@dataclass
class Counted:
    """A file in memory, followed by `zeros` zero bytes never stored, that counts what is read
    of it."""
    data: bytes
    zeros: int = 0
    read_bytes: int = 0

    def read(self, at: int, count: int) -> bytes:
        count = max(0, min(count, len(self.data) + self.zeros - at)) if at >= 0 else 0
        chunk = self.data[at:at + count].ljust(count, b"\0")
        self.read_bytes += len(chunk)
        return chunk


READABLE = {
    "inline, 64-bit little-endian": elf([(b".go.buildinfo", BUILDINFO_ADDRESS, inline())]),
    "inline, 32-bit big-endian": elf([(b".go.buildinfo", BUILDINFO_ADDRESS, inline())],
                                     wide=False, big=True),
    "pointers, 64-bit little-endian": pointer_format(True, False),
    "pointers, 32-bit big-endian": pointer_format(False, True),
}


@pytest.mark.parametrize("binary", READABLE.values(), ids=READABLE.keys())
def test_both_formats_are_read(binary):
    info = go_build_info(Counted(binary))
    assert info is not None and info.main == INFO.main and info.deps == INFO.deps
    assert info.go_version in ("go1.22.5", "go1.16.15")


GOOD = READABLE["inline, 64-bit little-endian"]


def patched(data: bytes, at: int, layout: str, value: int) -> bytes:
    return data[:at] + struct.pack(layout, value) + data[at + struct.calcsize(layout):]


HOSTILE = {
    "not an ELF": b"#!/bin/sh\necho hi\n" * 10,
    "truncated before the section table": GOOD[:len(GOOD) - 10],
    "truncated header": GOOD[:40],
    "section table beyond the end": elf([(b".go.buildinfo", 0, inline())], shoff_extra=1 << 40),
    "too many sections": elf([(b".go.buildinfo", 0, inline())], shnum=0xFFFF),
    "names index out of range": patched(GOOD, 0x3E, "<H", 0xFFFF),
    "no sections": elf([(b".go.buildinfo", 0, inline())], shnum=0),
    "no buildinfo section": elf([(b".text", 0, inline())]),
    "wrong magic": elf([(b".go.buildinfo", 0, b"\xff Go buildinfo" + inline()[14:])]),
    "huge varint": elf([(b".go.buildinfo", 0, header(8, 2) + b"\xff" * 9 + b"\x01")]),
    "varint past the section": elf([(b".go.buildinfo", 0, header(8, 2) + uvarint(1 << 40)
                                     + b"go1.22")]),
    "endless varint": elf([(b".go.buildinfo", 0, header(8, 2) + b"\xff" * 64)]),
    "version not go": elf([(b".go.buildinfo", 0, inline(version=b"rust1.7"))]),
    "bad pointer size": elf([(b".go.buildinfo", 0, header(3, 0))]),
    "pointer to nowhere": elf([(b".go.buildinfo", BUILDINFO_ADDRESS,
                                (b"\xff Go buildinf:\x08\x00"
                                 + struct.pack("<QQ", 1 << 60, 7)).ljust(32, b"\0"))]),
    "string longer than any section": pointer_format(True, False, version_length=1 << 62),
}


@pytest.mark.parametrize("binary", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_binaries_give_nothing(binary):
    assert go_build_info(Counted(binary)) is None


BIG = {
    "a 4 GiB binary": (GOOD, 1 << 32, INFO),
    "a section claiming 2**62 bytes": (patched(GOOD, len(GOOD) - 64 + 32, "<Q", 1 << 62), 0,
                                       INFO),
    "4096 section headers of 64 KiB": (patched(elf([(b".go.buildinfo", 0, inline())],
                                                   shnum=4096), 0x3A, "<H", 0xFFFF), 1 << 32,
                                       None),
    "a name table claiming 2**62 bytes": (patched(GOOD, len(GOOD) - 3 * 64 + 32, "<Q", 1 << 62),
                                          1 << 32, INFO),
}


@pytest.mark.parametrize("data, zeros, expected", BIG.values(), ids=BIG.keys())
def test_reads_are_bounded(data, zeros, expected):
    """However big the binary or what its headers claim, only a few small parts are read."""
    file = Counted(data, zeros)
    assert go_build_info(file) == expected
    assert file.read_bytes < 128 << 10


def test_the_docker_client_is_read_without_reading_it_all():
    """A real Go binary on this machine: the version `docker version` reports, a few KiB read."""
    client = shutil.which("docker")
    require(client is not None, "docker")
    reported = subprocess.run(["docker", "version", "--format", "{{.Client.GoVersion}}"],
                              capture_output=True, text=True)
    require(reported.returncode == 0 and reported.stdout.strip(), "docker")
    with open(client, "rb") as stream:
        binary = Counted(stream.read())
    info = go_build_info(binary)
    assert info is not None and info.go_version == reported.stdout.strip()
    assert binary.read_bytes < 64 << 10 < len(binary.data)


DEVEL = elf([(b".go.buildinfo", 0, inline(b"go1.21.0", _START + b"path\texample.com/tool\n"
                                             b"mod\texample.com/tool\t(devel)\t\n" + _END))])
GOPATH = elf([(b".go.buildinfo", 0, inline(b"go1.19.8", b""))])  # Debian's: no modules


def test_image_packages_name_go_modules_as_syft_does(tmp_path):
    executable = {"mode": 0o755}
    layer = tmp_path / "layer.tar"
    layer.write_bytes(tar_of(("usr/bin/app", tarfile.REGTYPE, GOOD, executable),
                             ("usr/lib/app.so", tarfile.REGTYPE, GOOD),  # not executable
                             ("usr/bin/script", tarfile.REGTYPE, b"#!/bin/sh\n", executable),
                             ("usr/bin/devel", tarfile.REGTYPE, DEVEL, executable),
                             ("usr/sbin/gopath", tarfile.REGTYPE, GOPATH, executable)).getvalue())
    found = [(p.name, p.version, p.purl, p.source) for p in image_packages([str(layer)])]
    assert found == [
        ("example.com/app", "v1.2.3", "pkg:golang/example.com/app@v1.2.3", "/usr/bin/app"),
        ("example.com/tool", "(devel)", "pkg:golang/example.com/tool@%28devel%29",
         "/usr/bin/devel"),
        ("github.com/fork/sys", "v0.2.0", "pkg:golang/github.com/fork/sys@v0.2.0",
         "/usr/bin/app"),
        ("github.com/pkg/errors", "v0.9.1", "pkg:golang/github.com/pkg/errors@v0.9.1",
         "/usr/bin/app"),
        ("stdlib", "go1.19.8", "pkg:golang/stdlib@1.19.8", "/usr/sbin/gopath"),
        ("stdlib", "go1.21.0", "pkg:golang/stdlib@1.21.0", "/usr/bin/devel"),
        ("stdlib", "go1.22.5", "pkg:golang/stdlib@1.22.5", "/usr/bin/app"),
    ]


def test_the_sbom_of_a_built_image_lists_its_go_binary(tmp_path):
    context = tmp_path / "context"
    context.mkdir()
    (context / "app").write_bytes(GOOD)
    (context / "app").chmod(0o755)
    (context / "Dockerfile").write_text("FROM scratch\nCOPY app /usr/local/bin/app\n")
    out = tmp_path / "image.tar"
    result = pybuild("--sbom=true", "-t", f"pybuild-gosbom-{uuid.uuid4().hex[:8]}", "-o",
                     str(out), str(context), env={"PYBUILD_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr
    with tarfile.open(out) as tar:
        def blob(digest: str) -> dict:
            return json.load(tar.extractfile("blobs/sha256/" + digest.partition(":")[2]))
        (top,) = json.load(tar.extractfile("index.json"))["manifests"]
        attestation = blob(blob(blob(top["digest"])["manifests"][1]["digest"])["layers"][0]
                           ["digest"])
    purls = {p["externalRefs"][0]["referenceLocator"]
             for p in attestation["predicate"]["packages"]}
    assert purls == {"pkg:golang/example.com/app@v1.2.3", "pkg:golang/github.com/fork/sys@v0.2.0",
                     "pkg:golang/github.com/pkg/errors@v0.9.1", "pkg:golang/stdlib@1.22.5"}
