"""The build info the Go toolchain embeds in an ELF executable (what `go version -m` prints):
the Go version and the modules linked in, read from the `.go.buildinfo` section only, as syft
reads it. Only the ELF header, the section headers, their names and that section are read, each
bounded, so a hostile or huge binary costs a few small reads and can only give wrong names.

The section starts with a 32-byte header: the magic, the pointer size, flags (bit 0 big-endian,
bit 1 strings inline). Go >= 1.18 puts the version and the module text after it, each prefixed
by its length as a uvarint; older Go puts two pointers to Go string headers (pointer, length)
there, addresses that the section table maps to file offsets."""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Protocol

MAGIC = b"\xff Go buildinf:"
ELF_MAGIC = b"\x7fELF"
_SECTION = b".go.buildinfo"
_MAX_SECTIONS = 1 << 12
_MAX_ENTRY = 256  # a section header's size: 40 or 64 bytes in practice
_MAX_NAMES = 1 << 16
_MAX_INFO = 1 << 20  # the section, and each string the pointer format points to
_NOBITS = 8
_SENTINEL = 16  # the bytes Go brackets the module text with


class Readable(Protocol):
    def read(self, at: int, count: int) -> bytes: ...


@dataclass(frozen=True)
class Module:
    path: str
    version: str
    sum: str


@dataclass(frozen=True)
class BuildInfo:
    go_version: str  # "go1.22.5"
    main: Module | None  # None for a binary built outside a module (`go build file.go`)
    deps: tuple[Module, ...]  # as linked: a replaced module is its replacement


@dataclass(frozen=True)
class _Section:
    name: int
    kind: int
    address: int
    offset: int
    size: int


@dataclass(frozen=True)
class _Elf:
    file: Readable
    sections: tuple[_Section, ...]
    names: int  # the index of the section holding the section names

    def at_address(self, address: int, count: int) -> bytes:
        """`count` bytes at virtual `address`, b"" when no section holds them all."""
        for section in self.sections:
            end = section.address + section.size
            if section.kind != _NOBITS and 0 < section.address <= address <= end - count:
                data = self.file.read(section.offset + address - section.address, count)
                return data if len(data) == count else b""
        return b""


def go_build_info(file: Readable) -> BuildInfo | None:
    """The build info of the ELF executable `file`, None when it is not a Go binary or its
    info cannot be read."""
    elf = _elf(file)
    if elf is None:
        return None
    names = _names(elf)
    for section in elf.sections:
        if _name(names, section.name) == _SECTION:
            data = file.read(section.offset, min(section.size, _MAX_INFO))
            return _decode(elf, data)
    return None


def _elf(file: Readable) -> _Elf | None:
    ident = file.read(0, 64)
    if len(ident) < 52 or not ident.startswith(ELF_MAGIC) or ident[4] not in (1, 2) \
            or ident[5] not in (1, 2):
        return None
    order, wide = "<" if ident[5] == 1 else ">", ident[4] == 2
    if wide:
        if len(ident) < 64:
            return None
        shoff, = struct.unpack_from(order + "Q", ident, 0x28)
        entsize, count, names = struct.unpack_from(order + "HHH", ident, 0x3A)
        layout, least = order + "IIQQQQ", 40
    else:
        shoff, = struct.unpack_from(order + "I", ident, 0x20)
        entsize, count, names = struct.unpack_from(order + "HHH", ident, 0x2E)
        layout, least = order + "IIIIII", 24
    if not least <= entsize <= _MAX_ENTRY or not 0 < count <= _MAX_SECTIONS:
        return None
    table = file.read(shoff, entsize * count)
    if len(table) < entsize * count:
        return None
    sections = tuple(_Section(name, kind, address, offset, size)
                     for name, kind, _, address, offset, size in
                     (struct.unpack_from(layout, table, i * entsize) for i in range(count)))
    return _Elf(file, sections, names)


def _names(elf: _Elf) -> bytes:
    """The section-name string table (e_shstrndx's section), bounded."""
    if elf.names >= len(elf.sections):
        return b""
    table = elf.sections[elf.names]
    return elf.file.read(table.offset, min(table.size, _MAX_NAMES))


def _name(names: bytes, at: int) -> bytes:
    return names[at:names.find(b"\0", at)] if at < len(names) and b"\0" in names[at:] else b""


def _decode(elf: _Elf, data: bytes) -> BuildInfo | None:
    if len(data) < 32 or not data.startswith(MAGIC):
        return None
    width, flags = data[14], data[15]
    if flags & 2:
        version, rest = _uvarint_string(data[32:])
        modules, _ = _uvarint_string(rest)
    elif width in (4, 8):
        order = ">" if flags & 1 else "<"
        pointer = order + ("I" if width == 4 else "Q")
        version = _pointed_string(elf, pointer, struct.unpack_from(pointer, data, 16)[0])
        modules = _pointed_string(elf, pointer, struct.unpack_from(pointer, data, 16 + width)[0])
    else:
        return None
    if version is None or not version.startswith(b"go"):
        return None
    return _modules(version.decode("utf-8", "replace"), modules or b"")


def _uvarint_string(data: bytes) -> tuple[bytes | None, bytes]:
    """A uvarint-length-prefixed string and what follows it; None when it does not fit."""
    length, shift = 0, 0
    for index, byte in enumerate(data[:10]):
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            start = index + 1
            if length > len(data) - start:
                return None, b""
            return data[start:start + length], data[start + length:]
        shift += 7
    return None, b""


def _pointed_string(elf: _Elf, pointer: str, address: int) -> bytes | None:
    """The Go string whose header (data pointer, length) is at virtual `address`."""
    width = struct.calcsize(pointer)
    header = elf.at_address(address, 2 * width)
    if not header:
        return None
    data, length = struct.unpack(pointer[0] + pointer[1] * 2, header)
    if length > _MAX_INFO:
        return None
    return elf.at_address(data, length) if length else b""


def _modules(version: str, text: bytes) -> BuildInfo:
    """The `path`/`mod`/`dep`/`=>` lines `go version -m` prints, sentinels stripped."""
    if len(text) >= 2 * _SENTINEL + 1 and text[-_SENTINEL - 1] == ord("\n"):
        text = text[_SENTINEL:-_SENTINEL]
    main: Module | None = None
    deps: list[Module] = []
    for line in text.decode("utf-8", "replace").splitlines():
        kind, _, rest = line.partition("\t")
        fields = rest.split("\t")
        module = Module(fields[0], fields[1] if len(fields) > 1 else "",
                        fields[2] if len(fields) > 2 else "")
        if not module.path:
            continue
        if kind == "mod":
            main = module
        elif kind == "dep":
            deps.append(module)
        elif kind == "=>" and deps:
            deps[-1] = module
    return BuildInfo(version, main, tuple(deps))
