"""The fallback where overlayfs cannot be mounted: a materialized root and a two-tree walk diff.

`materialize` copies an image's merged view into a plain directory for the command to change;
`diff_to_upper` then compares that directory with the view and writes what changed as an
overlay-format upper directory (new and changed entries as themselves, deletions as 0/0 character
devices), so the rest of the pipeline (layer tar, snapshot) is the same as with overlayfs. It costs
a walk of the whole root, which is why it is only the fallback (DESIGN.md principle 3).

Where the root cannot be mounted `nodev` (the chroot strategy), the image's device nodes must not
be real in it: `materialize(..., devices=False)` puts an inert placeholder there instead, a unix
socket inode with the node's owner, mode and times. It cannot be opened (ENXIO), so reads and
writes fail as they do on a node Docker's device cgroup denies, and nothing can be written into
it (an empty regular file would take writes, and root reads it). The diff reads it back as the
node it stands for: untouched, it is no change; chmod, chown or touch on it give the node with
the new attributes, as overlayfs's copy-up of the node would; removed or replaced, it is that.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import stat
import struct

from layers.union import UnionView, mark_opaque

_KEEP_XATTRS = ("security.capability",)
# FS_IOC_GETVERSION, _IOR('v', 1, long) in the common ioctl encoding; elsewhere it fails (ENOTTY)
# and the inode number alone is the identity.
_GET_GENERATION = (2 << 30) | (struct.calcsize("l") << 16) | (ord("v") << 8) | 1
Identity = tuple[int, int | None]


def materialize(view: UnionView, root: str, devices: bool = True) -> dict[str, Identity]:
    """Copy everything visible in `view` into the existing empty directory `root`, keeping type,
    mode, owner, times, device numbers and capabilities; without `devices`, a device node becomes
    a placeholder (see above). Files hardlinked in the image are copied
    apart, as overlayfs's copy-up parts them when one is written; so every regular file starts
    with one link, and one with more afterwards was linked by the command (overlayfs would have
    copied it up: the diff takes it). Returns the identity of every directory copied, so the diff
    can tell a directory deleted and made again (overlayfs would mark it opaque) from one whose
    entries were deleted one by one, and of every placeholder."""
    inodes: dict[str, Identity] = {}
    _copy_dir(view, "", root, inodes, devices)
    found = view.find("")
    if found is not None:
        _attributes(found[0], root, found[1])
    return inodes


def _copy_dir(view: UnionView, rel: str, root: str, inodes: dict[str, Identity],
              devices: bool) -> None:
    for name in view.listdir(rel):
        child = f"{rel}/{name}" if rel else name
        found = view.find(child)
        if found is None:
            continue
        source, st = found
        target = os.path.join(root, child)
        if stat.S_ISDIR(st.st_mode):
            os.mkdir(target)
            inodes[child] = _identity(target, os.lstat(target))
            _copy_dir(view, child, root, inodes, devices)
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(source), target)
        elif stat.S_ISREG(st.st_mode):
            shutil.copyfile(source, target, follow_symlinks=False)
        elif stat.S_ISSOCK(st.st_mode):
            continue
        elif _is_device(st) and not devices:
            os.mknod(target, stat.S_IFSOCK | 0o600)
            _attributes(source, target, st)
            inodes[child] = _identity(target, os.lstat(target))
            continue
        else:
            os.mknod(target, st.st_mode, st.st_rdev)
        _attributes(source, target, st)


def _attributes(source: str, target: str, st: os.stat_result) -> None:
    os.lchown(target, st.st_uid, st.st_gid)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(target, stat.S_IMODE(st.st_mode))
        for name in _KEEP_XATTRS:
            try:
                os.setxattr(target, name, os.getxattr(source, name, follow_symlinks=False),
                            follow_symlinks=False)
            except OSError:
                pass
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def diff_to_upper(root: str, view: UnionView, upper: str, inodes: dict[str, Identity]) -> None:
    """Write into the empty directory `upper` what `root` changed relative to `view` (`inodes`
    from `materialize`). A directory that replaced a lower entry, or was deleted and made again,
    is marked opaque, exactly as overlayfs would have left it, so both paths give one layer."""
    _diff_dir(root, view, upper, "", inodes)
    # Filling the upper dir's directories changed their mtimes; overlayfs keeps a copied-up
    # parent's, so they get root's back (a parent the command did not change keeps its old one).
    for directory, _, _ in os.walk(upper):
        if directory != upper:
            st = os.lstat(os.path.join(root, os.path.relpath(directory, upper)))
            os.utime(directory, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _same(a: os.stat_result, b: os.stat_result, a_path: str, b_path: str) -> bool:
    if stat.S_IFMT(a.st_mode) != stat.S_IFMT(b.st_mode) or a.st_mode != b.st_mode:
        return False
    if (a.st_uid, a.st_gid) != (b.st_uid, b.st_gid):
        return False
    if stat.S_ISDIR(a.st_mode):
        return a.st_mtime_ns == b.st_mtime_ns
    if stat.S_ISLNK(a.st_mode):
        return os.readlink(a_path) == os.readlink(b_path)
    if stat.S_ISCHR(a.st_mode) or stat.S_ISBLK(a.st_mode):
        return a.st_rdev == b.st_rdev
    return a.st_size == b.st_size and a.st_mtime_ns == b.st_mtime_ns and a.st_nlink == 1


def _is_device(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)


def _placeholder_of(st: os.stat_result, path: str, child: str, before: os.stat_result | None,
                    inodes: dict[str, Identity]) -> bool:
    """Whether `path` is still the placeholder `materialize` made for the device node `before`."""
    return (before is not None and _is_device(before) and stat.S_ISSOCK(st.st_mode)
            and child in inodes and inodes[child] == _identity(path, st))


def _identity(path: str, st: os.stat_result) -> Identity:
    """Inode number and generation: ext4 gives a directory deleted and made again its old inode
    number at once, but a new generation. A socket cannot be opened: its number alone."""
    if stat.S_ISSOCK(st.st_mode):
        return st.st_ino, None
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        size = struct.calcsize("l")
        generation = struct.unpack("l", fcntl.ioctl(fd, _GET_GENERATION, bytes(size)))[0]
    except OSError:  # tmpfs and others: they do not reuse inode numbers at once
        generation = None
    finally:
        os.close(fd)
    return st.st_ino, generation


def _diff_dir(root: str, view: UnionView, upper: str, rel: str,
              inodes: dict[str, Identity]) -> bool:
    """Record changes below `rel`; returns whether anything below it changed."""
    here = os.path.join(root, rel) if rel else root
    names = set(os.listdir(here))
    changed = False
    for name in sorted(set(view.listdir(rel)) - names):
        child = f"{rel}/{name}" if rel else name
        _ensure_parent(root, upper, rel)
        os.mknod(os.path.join(upper, child), stat.S_IFCHR | 0o000, 0)
        changed = True
    for name in sorted(names):
        child = f"{rel}/{name}" if rel else name
        path = os.path.join(root, child)
        st = os.lstat(path)
        before = view.find(child)
        replaced = before is None or stat.S_IFMT(before[1].st_mode) != stat.S_IFMT(st.st_mode)
        if stat.S_ISDIR(st.st_mode):
            remade = before is not None and (replaced or inodes.get(child) != _identity(path, st))
            below = _diff_dir(root, UnionView([]) if replaced or remade else view, upper, child,
                              inodes)
            if below or replaced or remade or not _same(st, before[1], path, before[0]):
                _ensure_parent(root, upper, child)
                if remade:
                    mark_opaque(os.path.join(upper, child))
                changed = True
            continue
        if _placeholder_of(st, path, child, before and before[1], inodes):
            device = before[1]
            if (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns) != (
                    stat.S_IMODE(device.st_mode), device.st_uid, device.st_gid,
                    device.st_mtime_ns):
                _ensure_parent(root, upper, rel)
                target = os.path.join(upper, child)
                os.mknod(target, stat.S_IFMT(device.st_mode) | 0o600, device.st_rdev)
                _attributes(path, target, st)
                changed = True
            continue
        if replaced or not _same(st, before[1], path, before[0]):
            _ensure_parent(root, upper, rel)
            target = os.path.join(upper, child)
            if stat.S_ISREG(st.st_mode):
                os.link(path, target)
            elif stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(path), target)
                _attributes(path, target, st)
            elif not stat.S_ISSOCK(st.st_mode):
                os.mknod(target, st.st_mode, st.st_rdev)
                _attributes(path, target, st)
            changed = True
    return changed


def _ensure_parent(root: str, upper: str, rel: str) -> None:
    """Create `rel` in upper (and its parents) with the metadata it has in root."""
    if not rel:
        return
    parts = rel.split("/")
    for depth in range(1, len(parts) + 1):
        part = "/".join(parts[:depth])
        target = os.path.join(upper, part)
        if not os.path.lexists(target):
            os.mkdir(target)
            source = os.path.join(root, part)
            _attributes(source, target, os.lstat(source))
