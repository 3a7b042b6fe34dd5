"""Whether this kernel can run another architecture's binaries: a RUN for a foreign platform
works only through a binfmt_misc handler (qemu-user-static's), so a build checks for one before
its first foreign RUN rather than failing with ENOEXEC inside it."""
from __future__ import annotations

import os
from functools import cache

from layers.platform import Platform, host_platform

BINFMT_DIR = "/proc/sys/fs/binfmt_misc"
# OCI architecture -> (ELF class: 1 for 32-bit, 2 for 64-bit; data: 1 little-, 2 big-endian;
# e_machine), what an ELF executable of that architecture starts with.
_ELF = {"amd64": (2, 1, 62), "arm64": (2, 1, 183), "arm": (1, 1, 40), "386": (1, 1, 3),
        "ppc64le": (2, 1, 21), "s390x": (2, 2, 22), "riscv64": (2, 1, 243),
        "mips64le": (2, 1, 8), "loong64": (2, 1, 258)}
# Foreign architectures the host's CPU runs itself.
_NATIVE = {"amd64": {"386"}, "arm64": {"arm"}}
_HINT = ("install the Debian package qemu-user-static (with binfmt-support), or run "
         "`update-binfmts --enable` if it is installed")


class NoHandler(Exception):
    pass


def _elf_header(architecture: str) -> bytes:
    elf_class, data, machine = _ELF[architecture]
    order = "little" if data == 1 else "big"
    return (b"\x7fELF" + bytes((elf_class, data, 1)) + bytes(9) + (2).to_bytes(2, order)
            + machine.to_bytes(2, order))


def _matches(entry: str, header: bytes) -> bool:
    fields = dict(line.split(" ", 1) for line in entry.splitlines()[1:] if " " in line)
    if not entry.startswith("enabled") or "magic" not in fields:
        return False
    offset = int(fields.get("offset", "0"))
    magic = bytes.fromhex(fields["magic"])
    mask = bytes.fromhex(fields.get("mask", "ff" * len(magic)))
    window = header[offset:offset + len(magic)]
    return len(window) == len(magic) and all(
        b & m == want & m for b, m, want in zip(window, mask, magic))


@cache
def require_runnable(platform: Platform) -> None:
    """Raises NoHandler, naming the package that provides one, when a binary of `platform`
    cannot run here."""
    host = host_platform().architecture
    if platform.architecture == host or platform.architecture in _NATIVE.get(host, ()):
        return
    if platform.architecture not in _ELF:
        raise NoHandler(f"pybuild cannot run binaries of {platform} (an architecture it has "
                        "no binfmt_misc check for)")
    if not os.path.exists(os.path.join(BINFMT_DIR, "status")):
        raise NoHandler(f"cannot run binaries of {platform}: binfmt_misc is not mounted at "
                        f"{BINFMT_DIR}; mount it (mount -t binfmt_misc binfmt_misc {BINFMT_DIR}) "
                        f"and {_HINT}")
    header = _elf_header(platform.architecture)
    for name in sorted(os.listdir(BINFMT_DIR)):
        if name in ("register", "status"):
            continue
        try:
            with open(os.path.join(BINFMT_DIR, name), encoding="ascii") as file:
                entry = file.read()
        except OSError:
            continue
        if _matches(entry, header):
            return
    raise NoHandler(f"cannot run binaries of {platform}: no binfmt_misc handler for "
                    f"{platform.architecture} is registered; {_HINT}")
