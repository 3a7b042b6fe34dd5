"""Docker's default seccomp profile for a RUN's command.

The rules are those of Docker's default profile, kept in pybuild's own tables
(`seccomp_profile.py`). They were checked against moby's profiles/seccomp/default.json (the
version that lists Linux 6.13's *xattrat calls), the reference to compare with when Docker
changes its profile: for x86-64, Docker's capabilities and this kernel they make the same rules
(name, action, arguments) as Docker makes of that file. libseccomp (libseccomp.so.2, which apt
itself depends on) turns them into a BPF program once per build; the command's process installs
that program with one prctl just before exec. As runc does, a system call newer than any the
rules name fails with ENOSYS rather than EPERM, so a C library falls back to an older call
instead of failing.

The filter is installed without no_new_privs (NoNewPrivs stays 0, as under Docker), which the
kernel allows only with CAP_SYS_ADMIN: the command has it in its own user namespace
(`namespaces`, `rootless`), pybuild has it as root; in an unprivileged container (`chroot`) it
does not, and the container's own filter is all there is.
"""
from __future__ import annotations

import ctypes
import os
import struct
from dataclasses import dataclass

from builder.sandbox import capabilities, linux, seccomp_profile as profile

_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_SCMP_ACT_ALLOW = 0x7FFF0000
_SCMP_ACT_ERRNO = 0x00050000
_SECCOMP_RET_ERRNO = 0x00050000
_EPERM = 1
_ENOSYS = 38
_SCMP_FLTATR_CTL_OPTIMIZE = 8
_OPTIMIZE_BINARY_TREE = 2
_OPS = {"<": 2, "==": 4, ">": 6, "&==": 7}  # libseccomp's SCMP_CMP_LT, _EQ, _GT, _MASKED_EQ
# os.uname().machine -> (libseccomp's names of the other ABIs its kernel runs, AUDIT_ARCH_*)
_ARCHES = {"x86_64": (("x86", "x32"), 0xC000003E),
           "aarch64": (("arm",), 0xC00000B7),
           "ppc64le": ((), 0xC0000015),
           "s390x": (("s390",), 0x80000016),
           "riscv64": ((), 0xC00000F3)}
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


def rules(machine: str, capability_mask: int, kernel: tuple[int, ...]) -> list[Rule]:
    """The allowed (and ENOSYS) calls for a process with `capability_mask` on `machine` running
    `kernel`; every other call fails with EPERM."""
    has = {name for name, number in capabilities.NUMBERS.items() if capability_mask & (1 << number)}
    allowed = list(profile.EVERYONE) + list(profile.ON_MACHINE.get(machine, ()))
    allowed += [name for since, names in profile.SINCE_KERNEL.items() if kernel >= since
                for name in names]
    allowed += [name for cap in sorted(has) for name in profile.WITH_CAPABILITY.get(cap, ())]
    found = [Rule(name, _SCMP_ACT_ALLOW) for name in allowed]
    found += [Rule(checked.name, _SCMP_ACT_ALLOW,
                   tuple((arg.index, _OPS[arg.op], arg.value, arg.expected)
                         for arg in checked.args))
              for checked in profile.CHECKED
              if (not checked.machines or machine in checked.machines)
              and checked.unless not in has]
    found += [Rule(name, _SCMP_ACT_ERRNO | _ENOSYS)
              for name, unless in profile.ENOSYS_UNLESS.items() if unless not in has]
    return found


def _version(text: str) -> tuple[int, ...]:
    numbers = []
    for part in text.split("-")[0].split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        numbers.append(int(digits or 0))
    return tuple(numbers)


class Filter:
    """A compiled BPF program, ready to install in a forked child without allocating."""

    def __init__(self, program: bytes) -> None:
        self.program = program
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
    machine = os.uname().machine
    if machine not in _ARCHES:
        raise Unavailable(f"no seccomp profile for the {machine} architecture")
    sub_arches, audit_arch = _ARCHES[machine]
    found = rules(machine, capabilities.DOCKER_MASK, _version(os.uname().release))
    program, highest = _compile(sub_arches, found)
    return Filter(_enosys_prologue(audit_arch, highest) + program)


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]


def library_version() -> str:
    """libseccomp's version ("2.5.4"; "" when it cannot be loaded): the program it compiles
    changes with it."""
    try:
        library = _library()
    except Unavailable:
        return ""
    library.seccomp_version.restype = ctypes.POINTER(_Version)
    found = library.seccomp_version().contents
    return f"{found.major}.{found.minor}.{found.micro}"


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
    library.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    library.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    library.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                               ctypes.c_uint, ctypes.POINTER(_ArgCmp)]
    library.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    return library


def _compile(sub_arches: tuple[str, ...], found: list[Rule]) -> tuple[bytes, int]:
    """The BPF program libseccomp makes of the rules, and the highest native system call number
    they name. Names this libseccomp does not know are left out (they are refused), as runc
    does. From libseccomp 2.5 the calls are sorted into a binary tree rather than a list: a
    longer program, but installing it takes the kernel half the time, as the kernel runs it for
    every system call number to find those always allowed."""
    library = _library()
    context = library.seccomp_init(_SCMP_ACT_ERRNO | _EPERM)
    if not context:
        raise Unavailable("seccomp_init failed")
    try:
        library.seccomp_attr_set(context, _SCMP_FLTATR_CTL_OPTIMIZE, _OPTIMIZE_BINARY_TREE)
        for name in sub_arches:
            token = library.seccomp_arch_resolve_name(name.encode())
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
