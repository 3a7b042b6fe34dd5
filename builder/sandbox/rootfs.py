"""The root filesystem a RUN sees: the image (overlay or a plain directory), a fresh /proc and
/sys, a minimal /dev, the host's resolv.conf and a generated hosts and hostname.

Everything here runs inside the sandbox's private mount namespace. Mount points the image lacks
have to be created in it, so they are recorded and removed from the upper dir afterwards: nothing
the sandbox adds may end up in the layer.
"""
from __future__ import annotations

import os
import stat

from builder.sandbox import linux
from layers.union import UnionView

DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
_DIR_STUBS = ("proc", "sys", "dev")
_FILE_STUBS = ("etc/resolv.conf", "etc/hosts", "etc/hostname")


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


def parent_times(root: str, stubs: list[str]) -> dict[str, tuple[int, int]]:
    """For a root changed in place: the times of the directories the stubs are made in, so that
    taking the stubs out again leaves those directories as they were."""
    times = {}
    for parent in {os.path.dirname(path) for path in stubs}:
        target = os.path.join(root, parent)
        if os.path.isdir(target):
            st = os.lstat(target)
            times[parent] = (st.st_atime_ns, st.st_mtime_ns)
    return times


def remove_stubs(root: str, stubs: list[str], times: dict[str, tuple[int, int]]) -> None:
    """For a root changed in place (no overlay): take the created mount points out again (a
    directory only if the command left nothing in it) and put the parents' times back."""
    for path in reversed(stubs):
        target = os.path.join(root, path)
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(st.st_mode):
            try:
                os.rmdir(target)
            except OSError:
                pass
        elif stat.S_ISREG(st.st_mode) and st.st_size == 0:
            os.unlink(target)
    for parent, (atime, mtime) in times.items():
        target = os.path.join(root, parent)
        if os.path.isdir(target):
            os.utime(target, ns=(atime, mtime), follow_symlinks=False)


def mount_image(root: str, lowerdirs: tuple[str, ...], upperdir: str, workdir: str,
                stub_layer: str, overlay: bool) -> None:
    """Overlay of the stub layer over the snapshots (top first, as overlayfs wants) with the
    upper dir; or, for the walk-diff fallback, a bind mount of the root materialized in
    `upperdir`, where the stubs are made in place (and removed afterwards)."""
    if not overlay:
        linux.mount(upperdir, root, None, linux.MS_BIND | linux.MS_REC)
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
    options = f"lowerdir={lower},upperdir={upperdir},workdir={workdir}"
    try:
        # volatile: no sync of the upper dir when the sandbox ends (pybuild never needs one:
        # DESIGN.md principle 9); kernels before 5.10 do not know it.
        linux.mount("overlay", root, "overlay", 0, options + ",volatile")
    except OSError:
        linux.mount("overlay", root, "overlay", 0, options)


def populate(root: str, etc_files: dict[str, str]) -> None:
    """Mount /proc, /sys, /dev and the /etc files over their (stub) mount points."""
    linux.mount("proc", os.path.join(root, "proc"), "proc",
                linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)
    # A fresh read-only sysfs, never a bind of the host's: its submounts (cgroups) would stay
    # writable.
    linux.mount("sysfs", os.path.join(root, "sys"), "sysfs",
                linux.MS_RDONLY | linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)
    _dev(os.path.join(root, "dev"))
    for rel, source in etc_files.items():
        target = os.path.join(root, rel)
        if os.path.islink(target) or not os.path.isfile(target):
            continue
        linux.mount(source, target, None, linux.MS_BIND)
        linux.mount(None, target, None, linux.MS_BIND | linux.MS_REMOUNT | linux.MS_RDONLY)


def _dev(dev: str) -> None:
    """A tmpfs /dev with the usual nodes bound from the host; writes here never reach the image."""
    linux.mount("tmpfs", dev, "tmpfs", linux.MS_NOSUID | linux.MS_NOEXEC, "mode=755,size=65536k")
    for name in DEVICES:
        target = os.path.join(dev, name)
        with open(target, "w"):
            pass
        linux.mount(f"/dev/{name}", target, None, linux.MS_BIND)
    os.mkdir(os.path.join(dev, "pts"), 0o755)
    linux.mount("devpts", os.path.join(dev, "pts"), "devpts", linux.MS_NOSUID | linux.MS_NOEXEC,
                "newinstance,ptmxmode=0666,mode=620")
    os.symlink("pts/ptmx", os.path.join(dev, "ptmx"))
    os.mkdir(os.path.join(dev, "shm"), 0o1777)
    linux.mount("shm", os.path.join(dev, "shm"), "tmpfs", linux.MS_NOSUID | linux.MS_NODEV,
                "mode=1777,size=65536k")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, os.path.join(dev, name))


def enter(root: str) -> None:
    """pivot_root into `root` and drop the host's tree from view."""
    os.chdir(root)
    linux.pivot_root(".", ".")
    linux.umount(".", linux.MNT_DETACH)
    os.chdir("/")
