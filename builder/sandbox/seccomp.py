"""Docker's default seccomp profile for a RUN's command.

The profile is data: `seccomp_default.json` is moby's profiles/seccomp/default.json (moby/moby
vendor/github.com/moby/profiles/seccomp, Apache-2.0), read as Docker reads it: a rule applies
when the machine's architecture, kernel and the command's capabilities (Docker's default set,
capabilities.py) meet its `includes`/`excludes`. libseccomp (libseccomp.so.2, which apt itself
depends on) turns it into a BPF program once per build; the command's process installs that
program with one prctl just before exec. As runc does, a system call newer than any the profile
names fails with ENOSYS rather than EPERM, so a C library falls back to an older call instead of
failing.

The filter is installed without no_new_privs (NoNewPrivs stays 0, as under Docker), which the
kernel allows only with CAP_SYS_ADMIN: the command has it in its own user namespace
(`namespaces`, `rootless`), pybuild has it as root; in an unprivileged container (`chroot`) it
does not, and the container's own filter is all there is.
"""
from __future__ import annotations

import ctypes
import json
import os
import platform
import struct
from dataclasses import dataclass
from pathlib import Path

from builder.sandbox import capabilities, linux

PROFILE = Path(__file__).with_name("seccomp_default.json")

_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_SCMP_ACT_ALLOW = 0x7FFF0000
_SCMP_ACT_ERRNO = 0x00050000
_SCMP_ACT_KILL = 0x00000000
_SECCOMP_RET_ERRNO = 0x00050000
_ENOSYS = 38
_OPS = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4, "SCMP_CMP_GE": 5,
        "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}
# platform.machine() -> (Go's name, as the profile's `arches` say; libseccomp's; AUDIT_ARCH_*)
_ARCHES = {"x86_64": ("amd64", "SCMP_ARCH_X86_64", 0xC000003E),
           "aarch64": ("arm64", "SCMP_ARCH_AARCH64", 0xC00000B7),
           "ppc64le": ("ppc64le", "SCMP_ARCH_PPC64LE", 0xC0000015),
           "s390x": ("s390x", "SCMP_ARCH_S390X", 0x80000016),
           "riscv64": ("riscv64", "SCMP_ARCH_RISCV64", 0xC00000F3)}
_X32_SYSCALL_BIT = 0x40000000


class Unavailable(Exception):
    """The filter cannot be made here; the message says why."""


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


class _Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


@dataclass(frozen=True)
class Rule:
    """One allowed (or specially refused) system call, with the argument conditions that must
    all hold: (index, op, value, value_two)."""

    name: str
    action: int
    args: tuple[tuple[int, int, int, int], ...] = ()


def rules(profile: dict, machine: str, capability_mask: int, kernel: tuple[int, ...]) \
        -> tuple[int, list[str], list[Rule]]:
    """The profile as it applies here: its default action, the sub-architectures of `machine`,
    and the rules whose conditions `machine`, `capability_mask` and `kernel` meet."""
    arch, scmp_arch, _ = _ARCHES[machine]
    sub_arches = next((entry.get("subArchitectures", []) for entry in profile.get("archMap", [])
                       if entry["architecture"] == scmp_arch), [])
    errno_default = profile.get("defaultErrnoRet", 1)
    default = _action(profile["defaultAction"], errno_default)
    has = {name for name, number in capabilities.NUMBERS.items() if capability_mask & (1 << number)}
    found = []
    for entry in profile["syscalls"]:
        includes, excludes = entry.get("includes", {}), entry.get("excludes", {})
        if includes.get("arches") and arch not in includes["arches"]:
            continue
        if arch in excludes.get("arches", ()):
            continue
        if includes.get("caps") and not set(includes["caps"]) <= has:
            continue
        if set(excludes.get("caps", ())) & has:
            continue
        if "minKernel" in includes and kernel < _version(includes["minKernel"]):
            continue
        action = _action(entry["action"], entry.get("errnoRet", 1))
        args = tuple((arg["index"], _OPS[arg["op"]], arg["value"], arg.get("valueTwo", 0))
                     for arg in entry.get("args") or ())
        found.extend(Rule(name, action, args) for name in entry["names"])
    return default, sub_arches, found


def _action(name: str, errno: int) -> int:
    if name == "SCMP_ACT_ALLOW":
        return _SCMP_ACT_ALLOW
    if name == "SCMP_ACT_ERRNO":
        return _SCMP_ACT_ERRNO | (errno & 0xFFFF)
    if name in ("SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD"):
        return _SCMP_ACT_KILL
    raise Unavailable(f"seccomp profile action {name} is not supported")


def _version(text: str) -> tuple[int, ...]:
    numbers = []
    for part in text.split("-")[0].split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        numbers.append(int(digits or 0))
    return tuple(numbers)


class Filter:
    """A compiled BPF program, ready to install in a forked child without allocating."""

    def __init__(self, program: bytes) -> None:
        self.instructions = len(program) // 8
        self._buffer = ctypes.create_string_buffer(program, len(program))
        self._program = _Program(self.instructions, ctypes.addressof(self._buffer))

    def install(self) -> None:
        """Confine this process and every process it starts, for good."""
        linux.check(linux.libc().prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER,
                                       ctypes.addressof(self._program), 0, 0),
                    "prctl(PR_SET_SECCOMP)")


def docker_default() -> Filter:
    """Docker's default profile for a command with Docker's default capabilities, compiled for
    this machine and kernel. Raises Unavailable when libseccomp is missing or refuses it."""
    machine = platform.machine()
    if machine not in _ARCHES:
        raise Unavailable(f"no seccomp profile for the {machine} architecture")
    profile = json.loads(PROFILE.read_text())
    default, sub_arches, found = rules(profile, machine, capabilities.DOCKER_MASK,
                                       _version(os.uname().release))
    program, highest = _compile(default, sub_arches, found)
    return Filter(_enosys_prologue(_ARCHES[machine][2], highest) + program)


def _library() -> ctypes.CDLL:
    try:
        library = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError as error:
        raise Unavailable(f"libseccomp.so.2 cannot be loaded ({error}); install libseccomp2")
    library.seccomp_init.restype = ctypes.c_void_p
    library.seccomp_init.argtypes = [ctypes.c_uint32]
    library.seccomp_release.argtypes = [ctypes.c_void_p]
    library.seccomp_arch_resolve_name.restype = ctypes.c_uint32
    library.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
    library.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    library.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    library.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                               ctypes.c_uint, ctypes.POINTER(_ArgCmp)]
    library.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    return library


def _compile(default: int, sub_arches: list[str], found: list[Rule]) -> tuple[bytes, int]:
    """The BPF program libseccomp makes of the rules, and the highest native system call number
    they name. Names this libseccomp does not know are left out (they are refused), as runc
    does."""
    library = _library()
    context = library.seccomp_init(default)
    if not context:
        raise Unavailable("seccomp_init failed")
    try:
        for name in sub_arches:
            token = library.seccomp_arch_resolve_name(name.removeprefix("SCMP_ARCH_").lower()
                                                      .encode())
            result = library.seccomp_arch_add(context, token) if token else 0
            if result not in (0, -17):  # -EEXIST: the native one
                raise Unavailable(f"seccomp_arch_add {name}: {os.strerror(-result)}")
        highest = 0
        for rule in found:
            number = library.seccomp_syscall_resolve_name(rule.name.encode())
            if number == -1:
                continue
            highest = max(highest, number)
            conditions = (_ArgCmp * max(len(rule.args), 1))(
                *(_ArgCmp(index, op, value, two) for index, op, value, two in rule.args))
            result = library.seccomp_rule_add_array(context, rule.action, number,
                                                    len(rule.args), conditions)
            if result < 0:
                raise Unavailable(f"seccomp rule for {rule.name}: {os.strerror(-result)}")
        descriptor = os.memfd_create("seccomp-bpf")
        try:
            result = library.seccomp_export_bpf(context, descriptor)
            if result < 0:
                raise Unavailable(f"seccomp_export_bpf: {os.strerror(-result)}")
            os.lseek(descriptor, 0, os.SEEK_SET)
            with os.fdopen(os.dup(descriptor), "rb") as file:
                return file.read(), highest
        finally:
            os.close(descriptor)
    finally:
        library.seccomp_release(context)


def _enosys_prologue(audit_arch: int, highest: int) -> bytes:
    """BPF that answers ENOSYS for a native system call numbered above `highest` (x32's, which
    have bit 30 set, go on to the profile), then falls through to the profile's program."""
    def op(code: int, jt: int, jf: int, k: int) -> bytes:
        return struct.pack("=HBBI", code, jt, jf, k)

    load, jeq, jge, jgt, ret = 0x20, 0x15, 0x35, 0x25, 0x06
    return b"".join((op(load, 0, 0, 4),                     # A = seccomp_data.arch
                     op(jeq, 0, 4, audit_arch),             # another arch: to the profile
                     op(load, 0, 0, 0),                     # A = seccomp_data.nr
                     op(jge, 2, 0, _X32_SYSCALL_BIT),
                     op(jgt, 0, 1, highest),
                     op(ret, 0, 0, _SECCOMP_RET_ERRNO | _ENOSYS)))
