"""Which system calls a RUN's command may make: the rules of Docker's default seccomp profile, in
pybuild's own tables (seccomp.py says how they were checked against Docker's).

Anything not allowed here fails with EPERM. Many allowed calls stay guarded by the kernel's own
capability checks (`setuid`, `mknod`, `adjtimex` setting the clock, ...): the filter only keeps
away the kernel interfaces a build has no business with, which are where container escapes have
come from (namespaces, mounts, keyrings, modules, perf, bpf, ...).
"""
from __future__ import annotations

from dataclasses import dataclass

# Calls a program may make whatever its capabilities, grouped by what they are for. A name this
# machine's kernel does not have (a 32-bit variant on a 64-bit machine) is skipped when compiled.
_DATA = ("_llseek", "close", "close_range", "copy_file_range", "dup", "dup2", "dup3",
         "fadvise64", "fadvise64_64", "fallocate", "fcntl", "fcntl64", "fdatasync", "flock",
         "fsync", "ioctl", "lseek", "pipe", "pipe2", "pread64", "preadv", "preadv2", "pwrite64",
         "pwritev", "pwritev2", "read", "readahead", "readv", "sendfile", "sendfile64", "splice",
         "sync", "sync_file_range", "syncfs", "tee", "vmsplice", "write", "writev")
_FILES = ("access", "chdir", "chmod", "chown", "chown32", "creat", "faccessat", "faccessat2",
          "fchdir", "fchmod", "fchmodat", "fchmodat2", "fchown", "fchown32", "fchownat",
          "fstat", "fstat64", "fstatat64", "fstatfs", "fstatfs64", "ftruncate", "ftruncate64",
          "futimesat", "getcwd", "getdents", "getdents64", "lchown", "lchown32", "link",
          "linkat", "listmount", "lstat", "lstat64", "mkdir", "mkdirat", "mknod", "mknodat",
          "name_to_handle_at", "newfstatat", "open", "openat", "openat2", "readlink",
          "readlinkat", "rename", "renameat", "renameat2", "rmdir", "stat", "stat64", "statfs",
          "statfs64", "statmount", "statx", "symlink", "symlinkat", "truncate", "truncate64",
          "umask", "unlink", "unlinkat", "utime", "utimensat", "utimensat_time64", "utimes")
_XATTRS = ("fgetxattr", "flistxattr", "fremovexattr", "fsetxattr", "getxattr", "getxattrat",
           "lgetxattr", "listxattr", "listxattrat", "llistxattr", "lremovexattr", "lsetxattr",
           "removexattr", "removexattrat", "setxattr", "setxattrat")
# Waiting for descriptors, and the descriptors made to be waited for.
_EVENTS = ("_newselect", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old",
           "epoll_pwait", "epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2",
           "fanotify_mark", "inotify_add_watch", "inotify_init", "inotify_init1",
           "inotify_rm_watch", "poll", "ppoll", "ppoll_time64", "pselect6", "pselect6_time64",
           "select", "signalfd", "signalfd4", "timerfd_create", "timerfd_gettime",
           "timerfd_gettime64", "timerfd_settime", "timerfd_settime64")
_ASYNC_IO = ("io_cancel", "io_destroy", "io_getevents", "io_pgetevents", "io_pgetevents_time64",
             "io_setup", "io_submit", "ioprio_get", "ioprio_set")
_MEMORY = ("brk", "cachestat", "madvise", "map_shadow_stack", "membarrier", "memfd_create",
           "memfd_secret", "mincore", "mlock", "mlock2", "mlockall", "mmap", "mmap2", "mprotect",
           "mremap", "mseal", "msync", "munlock", "munlockall", "munmap", "pkey_alloc",
           "pkey_free", "pkey_mprotect", "process_mrelease", "remap_file_pages")
# Starting, ending and waiting for processes; threads and their synchronisation; what a C
# library or a language runtime asks of the kernel at start-up (rseq, getrandom, ...), and
# confining itself further (seccomp, landlock).
_PROCESSES = ("capget", "capset", "execve", "execveat", "exit", "exit_group", "fork", "futex",
              "futex_requeue", "futex_time64", "futex_wait", "futex_waitv", "futex_wake",
              "get_robust_list", "get_thread_area", "getcpu", "getpgid", "getpgrp", "getpid",
              "getppid", "getrandom", "getsid", "gettid", "landlock_add_rule",
              "landlock_create_ruleset", "landlock_restrict_self", "pidfd_open",
              "pidfd_send_signal", "prctl", "restart_syscall", "riscv_hwprobe", "rseq",
              "seccomp", "set_robust_list", "set_thread_area", "set_tid_address", "setpgid",
              "setsid", "sysinfo", "uname", "uretprobe", "vfork", "wait4", "waitid", "waitpid")
# Changing ids is the kernel's to refuse (CAP_SETUID, CAP_SETGID), as for a program outside.
_IDS = ("getegid", "getegid32", "geteuid", "geteuid32", "getgid", "getgid32", "getgroups",
        "getgroups32", "getresgid", "getresgid32", "getresuid", "getresuid32", "getuid",
        "getuid32", "setfsgid", "setfsgid32", "setfsuid", "setfsuid32", "setgid", "setgid32",
        "setgroups", "setgroups32", "setregid", "setregid32", "setresgid", "setresgid32",
        "setresuid", "setresuid32", "setreuid", "setreuid32", "setuid", "setuid32")
_SIGNALS = ("kill", "pause", "rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo",
            "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64",
            "rt_tgsigqueueinfo", "sigaltstack", "sigprocmask", "sigreturn", "tgkill", "tkill")
# Reading clocks and sleeping; adjtimex and clock_adjtime only read unless CAP_SYS_TIME.
_TIME = ("adjtimex", "alarm", "clock_adjtime", "clock_adjtime64", "clock_getres",
         "clock_getres_time64", "clock_gettime", "clock_gettime64", "clock_nanosleep",
         "clock_nanosleep_time64", "getitimer", "gettimeofday", "nanosleep", "setitimer", "time",
         "timer_create", "timer_delete", "timer_getoverrun", "timer_gettime", "timer_gettime64",
         "timer_settime", "timer_settime64", "times")
_SCHEDULING = ("getpriority", "getrlimit", "getrusage", "prlimit64", "sched_get_priority_max",
               "sched_get_priority_min", "sched_getaffinity", "sched_getattr", "sched_getparam",
               "sched_getscheduler", "sched_rr_get_interval", "sched_rr_get_interval_time64",
               "sched_setaffinity", "sched_setattr", "sched_setparam", "sched_setscheduler",
               "sched_yield", "setpriority", "setrlimit", "ugetrlimit")
# Sockets once made; `socket` itself is checked below (its address family).
_SOCKETS = ("accept", "accept4", "bind", "connect", "getpeername", "getsockname", "getsockopt",
            "listen", "recv", "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg", "send",
            "sendmmsg", "sendmsg", "sendto", "setsockopt", "shutdown", "socketcall",
            "socketpair")
# System V and POSIX message queues, semaphores and shared memory (in the RUN's IPC namespace
# where it has one).
_IPC = ("ipc", "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive",
        "mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64", "mq_unlink", "msgctl",
        "msgget", "msgrcv", "msgsnd", "semctl", "semget", "semop", "semtimedop",
        "semtimedop_time64", "shmat", "shmctl", "shmdt", "shmget")

EVERYONE = tuple(sorted(_DATA + _FILES + _XATTRS + _EVENTS + _ASYNC_IO + _MEMORY + _PROCESSES
                        + _IDS + _SIGNALS + _TIME + _SCHEDULING + _SOCKETS + _IPC))

# Allowed only from this kernel version: before 4.8 a traced process could be made to skip the
# filter's checks.
SINCE_KERNEL = {(4, 8): ("process_vm_readv", "process_vm_writev", "ptrace")}

# Calls of one architecture (keyed as platform.machine() names it): thread-local storage and
# cache maintenance that its C library needs.
ON_MACHINE = {
    "x86_64": ("arch_prctl", "modify_ldt"),
    "aarch64": ("arm_fadvise64_64", "arm_sync_file_range", "breakpoint", "cacheflush",
                "set_tls", "sync_file_range2"),
    "ppc64le": ("swapcontext", "sync_file_range2"),
    "s390x": ("s390_pci_mmio_read", "s390_pci_mmio_write", "s390_runtime_instr"),
    "riscv64": ("riscv_flush_icache",),
}

# Calls allowed only to a process holding the capability they exist for. Of these, Docker's
# default set (capabilities.py) has CAP_SYS_CHROOT alone: the others are refused to a RUN.
WITH_CAPABILITY = {
    "CAP_DAC_READ_SEARCH": ("open_by_handle_at",),
    "CAP_SYS_ADMIN": ("bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen",
                      "fspick", "lookup_dcookie", "lsm_get_self_attr", "lsm_list_modules",
                      "lsm_set_self_attr", "mount", "mount_setattr", "move_mount", "open_tree",
                      "perf_event_open", "quotactl", "quotactl_fd", "setdomainname",
                      "sethostname", "setns", "syslog", "umount", "umount2", "unshare"),
    "CAP_SYS_BOOT": ("reboot",),
    "CAP_SYS_CHROOT": ("chroot",),
    "CAP_SYS_MODULE": ("delete_module", "finit_module", "init_module"),
    "CAP_SYS_PACCT": ("acct",),
    "CAP_SYS_PTRACE": ("kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv",
                       "process_vm_writev", "ptrace"),
    "CAP_SYS_RAWIO": ("ioperm", "iopl"),
    "CAP_SYS_TIME": ("clock_settime", "clock_settime64", "settimeofday", "stime"),
    "CAP_SYS_TTY_CONFIG": ("vhangup",),
    "CAP_SYS_NICE": ("get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"),
    "CAP_SYSLOG": ("syslog",),
    "CAP_BPF": ("bpf",),
    "CAP_PERFMON": ("perf_event_open",),
}


@dataclass(frozen=True)
class Arg:
    """A condition on argument `index`: `op` is "<", "==", ">" against `value`, or "&==": the
    argument masked with `value` equals `expected`."""

    index: int
    op: str
    value: int
    expected: int = 0


@dataclass(frozen=True)
class Checked:
    """`name` is allowed when all of `args` hold, on `machines` (every one when empty), to a
    process without the capability `unless` (which is allowed it outright above)."""

    name: str
    args: tuple[Arg, ...]
    machines: tuple[str, ...] = ()
    unless: str = ""


AF_ALG, AF_NFC, AF_VSOCK = 38, 39, 40
PER_LINUX, PER_LINUX32, UNAME26, PERSONALITY_QUERY = 0, 0x0008, 0x0020000, 0xFFFFFFFF
CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS = 0x00020000, 0x02000000, 0x04000000
CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = (0x08000000, 0x10000000, 0x20000000,
                                                           0x40000000)
NEW_NAMESPACES = (CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER
                  | CLONE_NEWPID | CLONE_NEWNET)

CHECKED = (
    # Every address family but AF_ALG (the kernel's crypto) and AF_VSOCK (the hypervisor's).
    Checked("socket", (Arg(0, "<", AF_ALG),)),
    Checked("socket", (Arg(0, "==", AF_NFC),)),
    Checked("socket", (Arg(0, ">", AF_VSOCK),)),
    # Only the personalities programs ask for (32-bit, an old uname), or asking which one is
    # set: not turning address randomisation off, nor the exotic ones.
    *(Checked("personality", (Arg(0, "==", value),))
      for value in (PER_LINUX, PER_LINUX32, UNAME26, PER_LINUX32 | UNAME26, PERSONALITY_QUERY)),
    # A new process or thread, in the namespaces it has: none of its own. s390 passes the flags
    # second.
    Checked("clone", (Arg(0, "&==", NEW_NAMESPACES),),
            machines=("x86_64", "aarch64", "ppc64le", "riscv64"), unless="CAP_SYS_ADMIN"),
    Checked("clone", (Arg(1, "&==", NEW_NAMESPACES),), machines=("s390x",),
            unless="CAP_SYS_ADMIN"),
)

# Calls that fail with ENOSYS rather than EPERM for a process without the capability: clone3's
# flags are in memory, where the filter cannot check them, so the C library, believing the
# kernel older, falls back to clone.
ENOSYS_UNLESS = {"clone3": "CAP_SYS_ADMIN"}
