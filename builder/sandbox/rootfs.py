"""The root filesystem a RUN sees: the image (overlay or a plain directory), a fresh /proc and
/sys, a minimal /dev, the host's resolv.conf and a generated hosts, as BuildKit mounts them.
/etc/hostname is the image's own, as under BuildKit: a RUN may write it into the layer.

The mounting runs inside the sandbox's private mount namespace. Mount points the image lacks
come from a stub layer stacked over the image (or, for a root changed in place, from
inplace.py, which takes them out again): nothing the sandbox adds may end up in the layer.
"""
from __future__ import annotations

import os
import shutil
import stat
import tempfile

from builder.sandbox import linux, process
from layers.union import UnionView

DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
             ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx"))
# statvfs flag -> mount flag, for the flags a bind mount keeps from its source
_KEPT_FLAGS = ((os.ST_NOSUID, linux.MS_NOSUID), (os.ST_NODEV, linux.MS_NODEV),
               (os.ST_NOEXEC, linux.MS_NOEXEC), (os.ST_NOATIME, linux.MS_NOATIME),
               (os.ST_NODIRATIME, linux.MS_NODIRATIME), (os.ST_RELATIME, linux.MS_RELATIME))
# What Docker makes read-only or hides in /proc: the command is root of the host's ids (mapped to
# themselves), and these files check no capability, only that the writer is root.
_PROC_READ_ONLY = ("bus", "fs", "irq", "sys", "sysrq-trigger")
_PROC_MASKED = ("acpi", "asound", "kcore", "keys", "latency_stats", "sched_debug", "scsi",
                "timer_list", "timer_stats")
_DIR_STUBS = ("proc", "sys", "dev")
_FILE_STUBS = ("etc/resolv.conf", "etc/hosts")
SHM_SIZE = 64 * 1024 * 1024  # Docker's /dev/shm, unless --shm-size says otherwise


HOSTS, RESOLV_CONF = "etc/hosts", "etc/resolv.conf"


def etc_files(scratch: str, hostname: str,
              extra_hosts: tuple[tuple[str, str], ...] = ()) -> dict[str, str]:
    """The host's resolv.conf and a generated hosts (written to `scratch`) shaped as BuildKit's,
    `extra_hosts` (--add-host) appended in order as `address<TAB>name` lines, by the path they
    take in the root."""
    hosts = os.path.join(scratch, "hosts")
    with open(hosts, "w") as handle:
        handle.write(f"127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost "
                     "ip6-loopback\n" + "".join(f"{address}\t{name}\n"
                                                 for name, address in extra_hosts))
    files = {HOSTS: hosts}
    if os.path.exists("/etc/resolv.conf"):
        files[RESOLV_CONF] = os.path.realpath("/etc/resolv.conf")
    return files


def missing_stubs(lowerdirs: tuple[str, ...]) -> list[str]:
    """The mount points (and /etc) the image lacks, judged on its snapshots before the run."""
    view = UnionView(list(lowerdirs))
    wanted = list(_DIR_STUBS) + ["etc"] + list(_FILE_STUBS)
    return [path for path in wanted if view.find(path) is None]


def make_stub_layer(directory: str, stubs: list[str], lowerdirs: tuple[str, ...]) -> None:
    """A lower layer holding just the missing mount points, stacked on top of the image: the
    mounts then sit on lower entries, so nothing is created in (or copied up to) the upper dir.
    A parent the image has (/etc) is repeated with the image's own owner and mode, because
    overlayfs shows a merged directory with the attributes of its topmost layer."""
    view = UnionView(list(lowerdirs))
    for path in stubs:
        target = os.path.join(directory, path)
        parent = os.path.dirname(path)
        if parent and not os.path.isdir(os.path.join(directory, parent)):
            os.makedirs(os.path.join(directory, parent))
            found = view.find(parent)
            if found is not None:
                st = found[1]
                os.chown(os.path.join(directory, parent), st.st_uid, st.st_gid)
                os.chmod(os.path.join(directory, parent), stat.S_IMODE(st.st_mode))
        if path in _DIR_STUBS or path == "etc":
            os.mkdir(target, 0o755)
        else:
            with open(target, "w"):
                pass


def overlay_refused(scratch: str, userxattr: bool) -> str | None:
    """Why an overlay cannot be mounted on the filesystem of `scratch` (tried in a throwaway
    child), or None when it can. In a user namespace it needs `userxattr` (Linux 5.11)."""
    base = tempfile.mkdtemp(dir=scratch, prefix="overlay-probe-")
    try:
        paths = {name: os.path.join(base, name) for name in ("lower", "upper", "work", "root")}
        for path in paths.values():
            os.mkdir(path)
        options = (f"lowerdir={paths['lower']},upperdir={paths['upper']},workdir={paths['work']}"
                   + (",userxattr" if userxattr else ""))
        return process.attempt(
            ("unshare", lambda: linux.unshare(linux.CLONE_NEWNS)),
            ("mount", lambda: linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)),
            ("mount overlay", lambda: _mount_overlay(paths["root"], options)))
    finally:
        shutil.rmtree(base, ignore_errors=True)


def mount_image(root: str, lowerdirs: tuple[str, ...], upperdir: str, workdir: str,
                stub_layer: str, overlay: bool, userxattr: bool = False,
                nodev: bool = True) -> None:
    """Overlay of the stub layer over the snapshots (top first, as overlayfs wants) with the
    upper dir; or, for the walk-diff fallback, a bind mount of the root materialized in
    `upperdir`, where inplace.py has made the mount points. In a user namespace
    overlayfs keeps its opaque marks in `user.overlay.*` xattrs (`userxattr`).

    The root is `nodev`: device nodes of the image (base layers, ADD archives, the snapshots of
    earlier RUNs) are shown as they are but cannot be opened, as Docker's device cgroup denies
    them. The sandbox's own /dev is a mount of its own and keeps working. Only RUN
    --security=insecure, which has every privilege anyway, gets usable nodes (not `nodev`), as
    under Docker's privileged mode."""
    if not overlay:
        linux.mount(upperdir, root, None, linux.MS_BIND | linux.MS_REC)
        if nodev:
            _remount(root, linux.MS_NODEV)
        return
    # Short relative names keep the mount options under the kernel's one-page limit whatever
    # the number of layers (full snapshot paths would stop at about 40).
    links = os.path.join(os.path.dirname(stub_layer), "lower")
    os.makedirs(links, exist_ok=True)
    for number, directory in enumerate(lowerdirs):
        os.symlink(directory, os.path.join(links, str(number)))
    os.symlink(stub_layer, os.path.join(links, "s"))
    os.chdir(links)
    lower = ":".join(["s"] + [str(n) for n in reversed(range(len(lowerdirs)))])
    options = (f"lowerdir={lower},upperdir={upperdir},workdir={workdir}"
               + (",userxattr" if userxattr else ""))
    _mount_overlay(root, options, linux.MS_NODEV if nodev else 0)


def _mount_overlay(root: str, options: str, flags: int = 0) -> None:
    """Mount an overlay `volatile`: without it, its unmount syncs the whole filesystem of the
    upper dir, which takes seconds when a build has just written gigabytes there (pybuild never
    needs that sync: DESIGN.md principle 9). Kernels before 5.10 do not know the option."""
    try:
        linux.mount("overlay", root, "overlay", flags, options + ",volatile")
    except OSError:
        linux.mount("overlay", root, "overlay", flags, options)


def populate(root: str, etc_files: dict[str, str], shm_size: int = SHM_SIZE) -> None:
    """Mount /proc, /sys, /dev (its /dev/shm `shm_size` bytes) and the /etc files over their
    (stub) mount points."""
    linux.mount("proc", os.path.join(root, "proc"), "proc",
                linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)
    # A fresh read-only sysfs, not a bind of the host's: its submounts (cgroups) would stay
    # writable. A user namespace may mount sysfs only in a network namespace of its own; with the
    # host's network it gets the host's /sys, read-only at the top (below, the host's owners
    # keep it from writing).
    sys = os.path.join(root, "sys")
    try:
        linux.mount("sysfs", sys, "sysfs",
                    linux.MS_RDONLY | linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)
    except PermissionError:
        linux.mount("/sys", sys, None, linux.MS_BIND | linux.MS_REC)
        read_only(sys)
    _dev(os.path.join(root, "dev"), shm_size)
    for rel, source in etc_files.items():
        target = os.path.join(root, rel)
        if os.path.islink(target) or not os.path.isfile(target):
            continue
        linux.mount(source, target, None, linux.MS_BIND)
        read_only(target)


def protect_proc() -> None:
    """Inside the root: make /proc's system-wide knobs read-only and hide what leaks the host."""
    for name in _PROC_READ_ONLY:
        path = os.path.join("/proc", name)
        if os.path.exists(path):
            linux.mount(path, path, None, linux.MS_BIND)
            read_only(path)
    for name in _PROC_MASKED:
        path = os.path.join("/proc", name)
        if os.path.isdir(path):
            linux.mount("tmpfs", path, "tmpfs", linux.MS_RDONLY | linux.MS_NOSUID | linux.MS_NODEV
                        | linux.MS_NOEXEC, "size=0")
        elif os.path.exists(path):
            linux.mount("/dev/null", path, None, linux.MS_BIND)


def read_only(target: str) -> None:
    """Make the bind mount at `target` read-only."""
    _remount(target, linux.MS_RDONLY)


def _remount(target: str, added: int) -> None:
    """Add the mount flags `added` to the bind mount at `target`. The flags it has from its
    source are kept: in a user namespace they are locked, and a remount that drops one is
    refused."""
    flags = os.statvfs(target).f_flag
    kept = linux.MS_BIND | linux.MS_REMOUNT | added
    for has, flag in _KEPT_FLAGS:
        if flags & has:
            kept |= flag
    if not flags & (os.ST_NOATIME | os.ST_RELATIME):
        kept |= linux.MS_STRICTATIME
    linux.mount(None, target, None, kept)


def _dev(dev: str, shm_size: int) -> None:
    """A tmpfs /dev with the usual nodes bound from the host, devpts, shm and mqueue, with
    Docker's flags (/dev itself is not noexec: a `#!` heredoc runs from /dev/pipes); writes
    here never reach the image."""
    linux.mount("tmpfs", dev, "tmpfs", linux.MS_NOSUID, "mode=755,size=65536k")
    for name in DEVICES:
        target = os.path.join(dev, name)
        with open(target, "w"):
            pass
        linux.mount(f"/dev/{name}", target, None, linux.MS_BIND)
    os.mkdir(os.path.join(dev, "pts"), 0o755)
    linux.mount("devpts", os.path.join(dev, "pts"), "devpts", linux.MS_NOSUID | linux.MS_NOEXEC,
                "newinstance,ptmxmode=0666,mode=620")
    os.mkdir(os.path.join(dev, "shm"), 0o1777)
    linux.mount("shm", os.path.join(dev, "shm"), "tmpfs",
                linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC, f"mode=1777,size={shm_size}")
    os.mkdir(os.path.join(dev, "mqueue"), 0o1777)
    linux.mount("mqueue", os.path.join(dev, "mqueue"), "mqueue",
                linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)
    for name, target in DEV_LINKS:
        os.symlink(target, os.path.join(dev, name))


def enter(root: str) -> None:
    """pivot_root into `root` and drop the host's tree from view."""
    os.chdir(root)
    linux.pivot_root(".", ".")
    linux.umount(".", linux.MNT_DETACH)
    os.chdir("/")
