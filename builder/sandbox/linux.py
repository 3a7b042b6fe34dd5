"""The few Linux system calls the sandbox needs that Python 3.11's os module lacks, via ctypes."""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import signal

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_RELATIME = 0x200000
MS_STRICTATIME = 0x1000000
MNT_DETACH = 0x2
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
CLOSE_RANGE_CLOEXEC = 0x4
_CLOSE_RANGE = 436  # the same number on every architecture (asm-generic and x86_64 alike)

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                            ctypes.c_uint]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


def libc() -> ctypes.CDLL:
    """The C library, for modules that declare further calls (capabilities, seccomp)."""
    return _libc


def check(result: int, what: str) -> None:
    """Raise OSError with errno when a libc call failed (returned non-zero)."""
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")


def _bytes(value: str | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def unshare(flags: int) -> None:
    check(_libc.unshare(flags), "unshare")


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0,
          data: str | None = None) -> None:
    check(_libc.mount(_bytes(source), _bytes(target), _bytes(fstype), flags, _bytes(data)),
           f"mount {fstype or source or ''} on {target}")


def umount(target: str, flags: int = 0) -> None:
    check(_libc.umount2(_bytes(target), flags), f"umount {target}")


def exchange(first: str, second: str) -> None:
    """Swap two paths in one step (renameat2 with RENAME_EXCHANGE): both must exist."""
    check(_libc.renameat2(_AT_FDCWD, _bytes(first), _AT_FDCWD, _bytes(second),
                          _RENAME_EXCHANGE), f"exchange {first} and {second}")


def pivot_root(new_root: str, put_old: str) -> None:
    number = _PIVOT_ROOT.get(os.uname().machine)
    if number is None:
        raise OSError(f"pivot_root: unknown system call number on {os.uname().machine}")
    check(_libc.syscall(number, _bytes(new_root), _bytes(put_old)), "pivot_root")


def sethostname(name: str) -> None:
    data = name.encode()
    check(_libc.sethostname(data, len(data)), "sethostname")


def die_with_parent(signal_number: int) -> None:
    """Ask the kernel to send `signal_number` to this process when its parent dies."""
    check(_libc.prctl(PR_SET_PDEATHSIG, signal_number, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")


def become_subreaper() -> None:
    """Adopt the orphans of this process's descendants (instead of init), so they can be reaped."""
    check(_libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), "prctl(PR_SET_CHILD_SUBREAPER)")


def reset_signals() -> None:
    """Every signal at its default disposition and none blocked, as a container's process starts.
    Python ignores SIGPIPE and SIGXFSZ at start-up, and an ignored signal stays ignored across
    exec: `yes | head` would never end, and `${PIPESTATUS[0]}` would be 1 instead of 141.
    Caught signals are reset by exec itself; Python's table says which are ignored (it reads
    every disposition at start-up, inherited ones included)."""
    for number in range(1, signal.NSIG):
        if signal.getsignal(number) == signal.SIG_IGN:
            signal.signal(number, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


def close_on_exec(first: int) -> None:
    """Mark every descriptor from `first` up close-on-exec: the command gets only stdin, stdout
    and stderr, not what pybuild inherited from its caller (a CI runner's pipes). Without
    close_range(2) (Linux 5.11 for the flag), each possible descriptor is marked in turn."""
    if _libc.syscall(_CLOSE_RANGE, ctypes.c_uint(first), ctypes.c_uint(0xFFFFFFFF),
                     ctypes.c_uint(CLOSE_RANGE_CLOEXEC)) == 0:
        return
    for descriptor in range(first, resource.getrlimit(resource.RLIMIT_NOFILE)[0]):
        try:
            os.set_inheritable(descriptor, False)
        except OSError:  # not open
            pass
