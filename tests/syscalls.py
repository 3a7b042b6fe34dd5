"""Tiny static x86-64 programs that make one system call each, for tests of what a RUN may call
without a compiler or a C library in the image: each exits with the call's errno (0 when it
succeeded, the low byte of its result's negation otherwise), e.g. 1 for EPERM, 38 for ENOSYS.
"""
from __future__ import annotations

import platform
import struct
from dataclasses import dataclass

_BASE = 0x400000
_HEADERS = 64 + 56


@dataclass(frozen=True)
class Call:
    """A system call by number with up to three 32-bit arguments (zero-extended; the rest 0)."""

    name: str
    number: int
    args: tuple[int, ...] = ()


def supported() -> bool:
    return platform.machine() == "x86_64"


def program(call: Call) -> bytes:
    """The ELF executable that makes `call` and exits with its errno."""
    a0, a1, a2 = (value & 0xFFFFFFFF for value in (call.args + (0, 0, 0))[:3])
    code = b"".join((
        b"\xb8" + struct.pack("<I", call.number),   # mov eax, number
        b"\xbf" + struct.pack("<I", a0),            # mov edi, a0
        b"\xbe" + struct.pack("<I", a1),            # mov esi, a1
        b"\xba" + struct.pack("<I", a2),            # mov edx, a2
        b"\x4d\x31\xd2\x4d\x31\xc0\x4d\x31\xc9",    # xor r10, r10; xor r8, r8; xor r9, r9
        b"\x0f\x05",                                # syscall
        b"\x48\x85\xc0\x78\x02\x31\xc0",            # test rax, rax; js +2; xor eax, eax
        b"\xf7\xd8\x89\xc7",                        # neg eax; mov edi, eax
        b"\xb8\x3c\x00\x00\x00\x0f\x05",            # mov eax, 60 (exit); syscall
    ))
    size = _HEADERS + len(code)
    elf = struct.pack("<4sBBBB8xHHIQQQIHHHHHH", b"\x7fELF", 2, 1, 1, 0, 2, 0x3E, 1,
                      _BASE + _HEADERS, 64, 0, 0, 64, 56, 1, 0, 0, 0)
    segment = struct.pack("<IIQQQQQQ", 1, 5, 0, _BASE, _BASE, size, size, 0x1000)
    return elf + segment + code


def dockerfile_lines(calls: list[Call], directory: str = "/calls") -> str:
    """RUN lines that write each call's program as `directory/<name>` with the image's printf
    (octal escapes), so a Dockerfile alone carries them: no context, no compiler."""
    lines = [f"RUN mkdir -p {directory}"]
    for call in calls:
        escaped = "".join(f"\\{byte:03o}" for byte in program(call))
        lines.append(f"RUN printf '{escaped}' > {directory}/{call.name} "
                     f"&& chmod 755 {directory}/{call.name}")
    return "\n".join(lines) + "\n"
