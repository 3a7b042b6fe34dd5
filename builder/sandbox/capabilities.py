"""The capabilities of a RUN's command, as Docker's default gives them to a container: 14 of the
kernel's 41 in the bounding, effective and permitted sets (`00000000a80425fb` in
/proc/self/status), no inheritable or ambient ones. A USER other than root then loses the
effective and permitted ones when it takes its uid, as under Docker.

The set to drop is worked out once per build in the parent (`DockerCapabilities.for_this_kernel`);
the command's process applies it just before exec, which costs a few dozen prctl calls.
"""
from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass

from builder.sandbox import linux

NUMBERS = {"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3,
           "CAP_FSETID": 4, "CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8,
           "CAP_LINUX_IMMUTABLE": 9, "CAP_NET_BIND_SERVICE": 10, "CAP_NET_BROADCAST": 11,
           "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_IPC_LOCK": 14, "CAP_IPC_OWNER": 15,
           "CAP_SYS_MODULE": 16, "CAP_SYS_RAWIO": 17, "CAP_SYS_CHROOT": 18,
           "CAP_SYS_PTRACE": 19, "CAP_SYS_PACCT": 20, "CAP_SYS_ADMIN": 21, "CAP_SYS_BOOT": 22,
           "CAP_SYS_NICE": 23, "CAP_SYS_RESOURCE": 24, "CAP_SYS_TIME": 25,
           "CAP_SYS_TTY_CONFIG": 26, "CAP_MKNOD": 27, "CAP_LEASE": 28, "CAP_AUDIT_WRITE": 29,
           "CAP_AUDIT_CONTROL": 30, "CAP_SETFCAP": 31, "CAP_MAC_OVERRIDE": 32,
           "CAP_MAC_ADMIN": 33, "CAP_SYSLOG": 34, "CAP_WAKE_ALARM": 35, "CAP_BLOCK_SUSPEND": 36,
           "CAP_AUDIT_READ": 37, "CAP_PERFMON": 38, "CAP_BPF": 39, "CAP_CHECKPOINT_RESTORE": 40}

# Docker's default (moby's oci/caps/defaults.go), what `docker build` gives a RUN.
DOCKER_DEFAULT = ("CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
                  "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
                  "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE")
DOCKER_MASK = sum(1 << NUMBERS[name] for name in DOCKER_DEFAULT)

_PR_CAPBSET_READ = 23
_PR_CAPBSET_DROP = 24
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_VERSION_3 = 0x20080522


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


_libc = linux.libc()
_libc.capget.argtypes = [ctypes.POINTER(_Header), ctypes.POINTER(_Data * 2)]
_libc.capset.argtypes = [ctypes.POINTER(_Header), ctypes.POINTER(_Data * 2)]
# Made here, not in the command's process, where each new object costs copied pages.
_HEADER, _DATA = _Header(), (_Data * 2)()
_HEADER_REF, _DATA_REF = ctypes.byref(_HEADER), ctypes.byref(_DATA)
_KEEP = (DOCKER_MASK & 0xFFFFFFFF, DOCKER_MASK >> 32)


def last_cap() -> int:
    """The highest capability this kernel knows."""
    with open("/proc/sys/kernel/cap_last_cap") as file:
        return int(file.read())


def effective() -> int:
    """This process's effective set as a mask."""
    header, data = _Header(_VERSION_3, 0), (_Data * 2)()
    linux.check(_libc.capget(ctypes.byref(header), ctypes.byref(data)), "capget")
    return data[0].effective | data[1].effective << 32


@dataclass(frozen=True)
class DockerCapabilities:
    """What to take from the command: `drops` are the capabilities this kernel knows outside
    Docker's default."""

    drops: tuple[int, ...]

    @classmethod
    def for_this_kernel(cls) -> DockerCapabilities:
        return cls(tuple(cap for cap in range(last_cap() + 1) if not DOCKER_MASK & (1 << cap)))

    def bound(self) -> None:
        """Drop the bounding and ambient sets to Docker's: those of the bounding set that are
        still there (a new user namespace fills it; a Docker container has Docker's already),
        which needs CAP_SETPCAP. The effective set is untouched, so what needs more comes next."""
        for cap in self.drops:  # dropping a dropped one succeeds: one call per capability
            if _libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                error = ctypes.get_errno()
                if _libc.prctl(_PR_CAPBSET_READ, cap, 0, 0, 0) == 1:
                    raise OSError(error, f"prctl(PR_CAPBSET_DROP): {os.strerror(error)}")
        linux.check(_libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0),
                    "prctl(PR_CAP_AMBIENT_CLEAR_ALL)")

    @staticmethod
    def restrict() -> None:
        """Effective and permitted sets to Docker's default (what of it this process has), no
        inheritable ones. Taking a uid other than 0 afterwards empties them, as under Docker."""
        _HEADER.version, _HEADER.pid = _VERSION_3, 0
        linux.check(_libc.capget(_HEADER_REF, _DATA_REF), "capget")
        for word, keep in zip(_DATA, _KEEP):
            word.effective &= keep
            word.permitted &= keep
            word.inheritable = 0
        linux.check(_libc.capset(_HEADER_REF, _DATA_REF), "capset")
