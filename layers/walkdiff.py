"""Where overlayfs cannot be mounted: a working root in a plain directory, and a walk diff.

A `WorkingRoot` is an image copied into a plain directory that RUN commands change in place. It
outlives a RUN, and a build (layers/rootpool.py keeps it under the cache): the root a RUN leaves
is the root the next one starts from, a layer the build adds without a RUN (a COPY, a cache hit)
is applied to it from its snapshot, and a root holding layers the next RUN's image lacks is
rewound past them from their snapshots, so an image is copied once, not once per RUN or build.
After each RUN a walk compares the root with the stat records taken after the previous one and
writes what changed as an upper directory in the snapshot store's form (layers/union.py: new and
changed entries as themselves, deletions as whiteouts, a directory deleted and made again marked
opaque), exactly as overlayfs would have left it, so the layer tar and the snapshot are the same
as with overlayfs. The walk costs one lstat per entry of the root (an inode whose ctime did not
move is passed over at once) and copies only what changed.

Files hardlinked in the image are copied apart, as overlayfs's copy-up parts them when one is
written; links a RUN makes are parted after its diff, for the same reason.

Where the root cannot be mounted `nodev` (the chroot strategy), the image's device nodes must not
be real in it: with `devices=False` an inert placeholder stands there instead, a unix socket
inode with the node's owner, mode and times. It cannot be opened (ENXIO), so reads and writes fail
as they do on a node Docker's device cgroup denies, and nothing can be written into it (an empty
regular file would take writes, and root reads it). The diff reads it back as the node it stands
for: untouched, it is no change; chmod, chown or touch on it give the node with the new
attributes, as overlayfs's copy-up of the node would; removed or replaced, it is that.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import stat
import struct
import tempfile
import time

from layers.tarwriter import OPAQUE_MARKER, WHITEOUT_PREFIX
from layers.union import FILES, UnionView, is_opaque, is_whiteout, make_opaque, make_whiteout

_SKIP_XATTRS = ("trusted.overlay.", "user.overlay.")
# FS_IOC_GETVERSION, _IOR('v', 1, long) in the common ioctl encoding; elsewhere it fails (ENOTTY)
# and the inode number alone is the identity.
_GET_GENERATION = (2 << 30) | (struct.calcsize("l") << 16) | (ord("v") << 8) | 1
# CLOCK_REALTIME_COARSE, the clock the kernel stamps inode times with (Linux's number; Python
# names only the fine one).
_REALTIME_COARSE = 5
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _key(st: os.stat_result) -> tuple[int, int, int, int, int]:
    """What tells a non-directory unchanged: its inode's ctime first (set by every change of
    content, owner, mode, times, links or xattrs), then what a reused inode would differ in."""
    return st.st_ctime_ns, st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns


def _attributes_of(st: os.stat_result) -> tuple[int, int, int, int]:
    """What a directory's or placeholder's change is judged on: mode, owner, mtime (a
    directory's size follows its entries, differently on each filesystem)."""
    return st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns


class WorkingRoot:
    """One directory a stage's RUNs change in place, the layers it holds (`diff_ids`), and the
    stat records the next diff compares against: per directory, each entry's `os.stat_result`
    by name."""

    def __init__(self, path: str, devices: bool) -> None:
        self.path = path
        self.devices = devices
        self.diff_ids: tuple[str, ...] = ()
        self._records: dict[str, dict[str, os.stat_result]] = {}
        self._generations: dict[str, int | None] = {}
        self._devices: dict[str, tuple[int, int]] = {}  # placeholder -> (node's mode, rdev)
        self._granularity = _time_granularity(os.path.dirname(path))

    def extend(self, snapshots: list[str], form: str, diff_ids: tuple[str, ...]) -> None:
        """Apply snapshot directories (lowest first, in `form`) on top: the root then holds
        `diff_ids`. The records are taken afresh."""
        for snapshot in snapshots:
            self._apply(snapshot, "", form)
        if snapshots:
            copy_attributes(snapshots[-1], self.path, os.lstat(snapshots[-1]))
        elif not diff_ids:
            os.chmod(self.path, 0o755)
        self.diff_ids = diff_ids
        self._wait_past(self._walk(None))

    def rewind(self, extra: list[str], lower: list[str], form: str,
               diff_ids: tuple[str, ...]) -> None:
        """Take the root back to `diff_ids` (their snapshots `lower`, lowest first) from those
        layers and `extra` (the snapshots of the layers above them): each path the extra layers
        hold is put back as the lower ones have it, a directory they deleted or made opaque
        with all it held. It costs what the extra layers hold, not what the image holds; the
        records are left to the `extend` that follows."""
        view = UnionView(lower, form)
        paths: dict[str, bool] = {"": False}  # path -> whether its whole subtree goes back
        for snapshot in extra:
            _layer_paths(snapshot, "", form == FILES, paths)
        done: set[str] = set()  # paths whose subtree is back (or gone), or not a directory
        directories: list[tuple[str, str, os.stat_result]] = []
        for rel in sorted(paths, key=lambda path: path.split("/")):
            if _below(rel, done):  # never through a symlink a RUN left: its parents are dirs
                continue
            target = os.path.join(self.path, rel) if rel else self.path
            for placeholder in [p for p in self._devices if p == rel or p.startswith(rel + "/")]:
                del self._devices[placeholder]
            found = view.find(rel)
            if found is None:
                _remove(target)
                done.add(rel)
                continue
            source, st = found
            if not stat.S_ISDIR(st.st_mode):
                _remove(target)
                if self._copy(source, target, st):
                    copy_attributes(source, target, st)
                done.add(rel)
                continue
            if rel and (paths[rel] or not _is_directory(target)):
                _remove(target)
                os.mkdir(target, 0o700)
                self._fill(view, rel)
                done.add(rel)
            directories.append((target, source, st))
        for target, source, st in reversed(directories):
            copy_attributes(source, target, st)
        self.diff_ids = diff_ids

    def _fill(self, view: UnionView, rel: str) -> None:
        """Copy what directory `rel` holds in `view` into the root's empty one."""
        for name in view.listdir(rel):
            child = f"{rel}/{name}"
            source, st = view.find(child)
            target = os.path.join(self.path, child)
            if stat.S_ISDIR(st.st_mode):
                os.mkdir(target, 0o700)
                self._fill(view, child)
                copy_attributes(source, target, st)
            elif self._copy(source, target, st):
                copy_attributes(source, target, st)

    @property
    def recorded(self) -> bool:
        """Whether the records of a walk are there to diff against."""
        return bool(self._records)

    @property
    def placeholders(self) -> dict[str, tuple[int, int]]:
        """The device nodes the root holds placeholders for: path -> (node's mode, rdev)."""
        return dict(self._devices)

    @classmethod
    def kept(cls, path: str, devices: bool, diff_ids: tuple[str, ...],
             placeholders: dict[str, tuple[int, int]]) -> WorkingRoot:
        """A root kept from an earlier build, holding `diff_ids`; without records until its
        `extend`."""
        root = cls(path, devices)
        root.diff_ids = diff_ids
        root._devices = dict(placeholders)
        return root

    def diff(self, upper: str, lower: UnionView, settled: tuple[str, ...] = ()) -> None:
        """Write into the empty directory `upper`, in `lower`'s form, what the root changed
        since the records; then take the records again. `settled` are paths the sandbox moved
        away and back: their inode changed only in its ctime, which is no change of the image."""
        self._settle(settled)
        diff = _Diff(upper, lower.form)
        changed = self._walk(diff)
        if diff.multiple:
            self._part(diff.multiple)
            changed = time.time_ns()
        self._wait_past(changed)
        # Filling the upper dir's directories changed their mtimes; overlayfs keeps a copied-up
        # parent's, so they get root's back (a parent the command did not change keeps its own).
        for directory, _, _ in os.walk(upper):
            if directory != upper:
                st = os.lstat(os.path.join(self.path, os.path.relpath(directory, upper)))
                os.utime(directory, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)

    def _walk(self, diff: _Diff | None) -> int:
        """Take the records again (with `diff`, comparing them with the old ones); the time it
        started, after every change the records hold."""
        started = time.time_ns()
        old = self._records, self._generations
        self._records, self._generations = {}, {}
        fd = os.open(self.path, _DIRECTORY)
        try:
            self._scan(diff, old, "", fd, fresh=diff is None, parent_changed=True)
        finally:
            os.close(fd)
        return started

    def _wait_past(self, changed: int) -> None:
        """Wait until the clock the kernel stamps ctimes with has moved past `changed` (the time
        of the last change the records hold), in the filesystem's granularity: a change made
        after that never has the ctime a record holds, even where timestamps are coarse (the
        kernel's tick, or whole seconds). The walk itself mostly takes longer than a tick."""
        after = (changed // self._granularity + 1) * self._granularity
        while time.clock_gettime_ns(_REALTIME_COARSE) < after:
            time.sleep(0.001)

    def _settle(self, paths: tuple[str, ...]) -> None:
        for rel in paths:
            parent, _, name = rel.rpartition("/")
            records = self._records.get(parent, {})
            before = records.get(name)
            try:
                now = os.lstat(os.path.join(self.path, rel))
            except FileNotFoundError:
                continue
            if before is not None and _key(before)[1:] == _key(now)[1:]:
                records[name] = now

    def _part(self, linked: list[str]) -> None:
        """Copy apart the files a RUN hardlinked (its layer has the links): overlayfs would copy
        up only the one a later RUN writes. The directories keep their times."""
        first: dict[int, str] = {}
        for rel in linked:
            path = os.path.join(self.path, rel)
            st = os.lstat(path)
            if first.setdefault(st.st_ino, rel) != rel:
                parent = os.path.dirname(path)
                times = os.lstat(parent)
                fd, temp = tempfile.mkstemp(dir=parent, prefix=".part-")
                os.close(fd)
                shutil.copyfile(path, temp)
                copy_attributes(path, temp, st)
                os.rename(temp, path)
                os.utime(parent, ns=(times.st_atime_ns, times.st_mtime_ns))
        for rel in linked:
            parent, _, name = rel.rpartition("/")
            self._records[parent][name] = os.lstat(os.path.join(self.path, rel))

    # -- applying a snapshot ---------------------------------------------------------------------

    def _apply(self, source: str, rel: str, form: str) -> None:
        here = os.path.join(self.path, rel) if rel else self.path
        files = form == FILES
        if (os.path.lexists(os.path.join(source, OPAQUE_MARKER)) if files
                else rel and is_opaque(source)):
            for name in os.listdir(here):
                _remove(os.path.join(here, name))
        with os.scandir(source) as it:
            entries = sorted(it, key=lambda e: not e.name.startswith(WHITEOUT_PREFIX))
        for entry in entries:
            target = os.path.join(here, entry.name)
            child = f"{rel}/{entry.name}" if rel else entry.name
            st = entry.stat(follow_symlinks=False)
            if files and entry.name.startswith(WHITEOUT_PREFIX):
                if entry.name != OPAQUE_MARKER:
                    _remove(os.path.join(here, entry.name[len(WHITEOUT_PREFIX):]))
                continue
            if not files and is_whiteout(st):
                _remove(target)
                continue
            if stat.S_ISDIR(st.st_mode):
                if not os.path.isdir(target) or os.path.islink(target):
                    _remove(target)
                    os.mkdir(target, 0o700)
                self._apply(entry.path, child, form)
                copy_attributes(entry.path, target, st)
                continue
            _remove(target)
            if self._copy(entry.path, target, st):
                copy_attributes(entry.path, target, st)

    def _copy(self, source: str, target: str, st: os.stat_result) -> bool:
        """Copy one non-directory; whether it is there to take attributes (sockets are not)."""
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(source), target)
        elif stat.S_ISREG(st.st_mode):
            shutil.copyfile(source, target, follow_symlinks=False)
        elif stat.S_ISSOCK(st.st_mode):
            return False
        elif _is_device(st) and not self.devices:
            os.mknod(target, stat.S_IFSOCK | 0o600)
            self._devices[os.path.relpath(target, self.path)] = (st.st_mode, st.st_rdev)
        else:
            os.mknod(target, st.st_mode, st.st_rdev)
        return True

    # -- the walk --------------------------------------------------------------------------------

    def _scan(self, diff: _Diff | None, old: tuple[dict, dict], rel: str, fd: int, fresh: bool,
              parent_changed: bool) -> bool:
        """Take the records below `rel` (open as `fd`) and, with `diff`, record what changed
        since the `old` ones (all of it when `fresh`: a directory new, replaced or remade).
        Returns whether anything below changed. An entry whose inode kept its ctime is
        unchanged: any write, chmod, chown, utime, link or xattr change sets it, so only a
        directory's own entries need more than one lstat (relative to the directory's
        descriptor: no path lookup) and a comparison."""
        prefix = f"{rel}/" if rel else ""
        old_records, old_generations = old
        before_all = {} if fresh else old_records.get(rel, {})
        records: dict[str, os.stat_result] = {}
        self._records[rel] = records
        changed = False
        with os.scandir(fd) as it:
            entries = list(it)
        for entry in entries:
            name = entry.name
            st = records[name] = entry.stat(follow_symlinks=False)
            before = before_all.get(name)
            is_dir = stat.S_ISDIR(st.st_mode)
            # _key(before) == _key(st), written out: the walk's hottest line
            if before is not None and not is_dir and before.st_ctime_ns == st.st_ctime_ns \
                    and before.st_ino == st.st_ino and before.st_mode == st.st_mode \
                    and before.st_size == st.st_size and before.st_mtime_ns == st.st_mtime_ns:
                continue
            child = prefix + name
            if is_dir:
                below_fd = os.open(name, _DIRECTORY, dir_fd=fd)
                try:
                    changed |= self._directory(diff, old, child, below_fd, before, st,
                                               parent_changed)
                finally:
                    os.close(below_fd)
                continue
            if diff is None:
                continue
            device = self._devices.get(child)
            if device is not None and before is not None and before.st_ino == st.st_ino \
                    and stat.S_ISSOCK(st.st_mode):
                if _attributes_of(before) != _attributes_of(st):
                    diff.ensure_parent(self.path, rel)
                    target = os.path.join(diff.upper, child)
                    os.mknod(target, stat.S_IFMT(device[0]) | 0o600, device[1])
                    copy_attributes(os.path.join(self.path, child), target, st)
                    changed = True
                continue
            self._devices.pop(child, None)
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                diff.multiple.append(child)
            diff.copy(self.path, rel, child, st)
            changed = True
        if diff is not None and not fresh:
            for name in sorted(before_all.keys() - records.keys()):
                self._devices.pop(prefix + name, None)
                diff.whiteout(self.path, prefix + name)
                changed = True
        return changed

    def _directory(self, diff: _Diff | None, old: tuple[dict, dict], rel: str, fd: int,
                   before: os.stat_result | None, st: os.stat_result,
                   parent_changed: bool) -> bool:
        """`_scan` for a directory of the root (open as `fd`): whether it or anything below
        changed."""
        old_generations = old[1]
        was_dir = before is not None and stat.S_ISDIR(before.st_mode)
        if was_dir and before.st_ino == st.st_ino and not parent_changed:
            generation = old_generations.get(rel)
        else:
            generation = _generation(fd)
        self._generations[rel] = generation
        if diff is None:
            return self._scan(None, old, rel, fd, True, True)
        # overlayfs marks opaque a directory made where a lower entry was deleted
        remade = before is not None and (not was_dir or (
            before.st_ino, old_generations.get(rel)) != (st.st_ino, generation))
        new = before is None or remade
        own = new or _attributes_of(before) != _attributes_of(st)
        below = self._scan(diff, old, rel, fd, new,
                           before is None or before.st_mtime_ns != st.st_mtime_ns)
        if below or own:
            diff.ensure_parent(self.path, rel)
            if remade:
                make_opaque(os.path.join(diff.upper, rel), diff.form)
            return True
        return False


class _Diff:
    """One diff's output."""

    def __init__(self, upper: str, form: str) -> None:
        self.upper, self.form = upper, form
        self.linked: dict[int, str] = {}  # inode -> its first path in upper (links the RUN made)
        self.multiple: list[str] = []     # files of the root with more than one link

    def whiteout(self, root: str, rel: str) -> None:
        self.ensure_parent(root, rel.rpartition("/")[0])
        make_whiteout(os.path.join(self.upper, rel), self.form)

    def copy(self, root: str, rel: str, child: str, st: os.stat_result) -> None:
        self.ensure_parent(root, rel)
        source, target = os.path.join(root, child), os.path.join(self.upper, child)
        if stat.S_ISREG(st.st_mode):
            first = self.linked.get(st.st_ino) if st.st_nlink > 1 else None
            if first is not None:
                os.link(first, target)
                return
            shutil.copyfile(source, target, follow_symlinks=False)
            if st.st_nlink > 1:
                self.linked[st.st_ino] = target
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(source), target)
        elif stat.S_ISSOCK(st.st_mode):
            return
        else:
            os.mknod(target, st.st_mode, st.st_rdev)
        copy_attributes(source, target, st)

    def ensure_parent(self, root: str, rel: str) -> None:
        """Create `rel` in upper (and its parents) with the metadata it has in root."""
        if not rel:
            return
        parts = rel.split("/")
        for depth in range(1, len(parts) + 1):
            part = "/".join(parts[:depth])
            target = os.path.join(self.upper, part)
            if not os.path.lexists(target):
                os.mkdir(target)
                source = os.path.join(root, part)
                copy_attributes(source, target, os.lstat(source))


def copy_attributes(source: str, target: str, st: os.stat_result) -> None:
    """Owner, mode, xattrs (but overlayfs's own), times of `source` on `target`."""
    os.lchown(target, st.st_uid, st.st_gid)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(target, stat.S_IMODE(st.st_mode))
        try:
            names = os.listxattr(source, follow_symlinks=False)
        except OSError:
            names = []
        for name in names:
            if not name.startswith(_SKIP_XATTRS):
                try:
                    os.setxattr(target, name, os.getxattr(source, name, follow_symlinks=False),
                                follow_symlinks=False)
                except OSError:
                    pass
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _is_device(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)


def _layer_paths(directory: str, rel: str, files: bool, paths: dict[str, bool]) -> None:
    """Every path a snapshot holds into `paths`, True for those whose whole subtree it replaces
    (a deletion, an opaque directory)."""
    if rel and (os.path.lexists(os.path.join(directory, OPAQUE_MARKER)) if files
                else is_opaque(directory)):
        paths[rel] = True
    with os.scandir(directory) as it:
        for entry in it:
            name = entry.name
            if files and name.startswith(WHITEOUT_PREFIX):
                if name != OPAQUE_MARKER:
                    name = name[len(WHITEOUT_PREFIX):]
                    paths[f"{rel}/{name}" if rel else name] = True
                continue
            child = f"{rel}/{name}" if rel else name
            st = entry.stat(follow_symlinks=False)
            if not files and is_whiteout(st):
                paths[child] = True
                continue
            paths.setdefault(child, False)
            if stat.S_ISDIR(st.st_mode):
                _layer_paths(entry.path, child, files, paths)


def _below(rel: str, directories: set[str]) -> bool:
    """Whether `rel` is inside one of `directories`."""
    parent = rel.rpartition("/")[0]
    while parent:
        if parent in directories:
            return True
        parent = parent.rpartition("/")[0]
    return False


def _is_directory(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _remove(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _generation(fd: int) -> int | None:
    """The inode's generation: ext4 gives a directory deleted and made again its old inode
    number at once, but a new generation; tmpfs and others give none (they do not reuse inode
    numbers at once)."""
    try:
        size = struct.calcsize("l")
        return struct.unpack("l", fcntl.ioctl(fd, _GET_GENERATION, bytes(size)))[0]
    except OSError:
        return None


def _time_granularity(directory: str) -> int:
    """The nanoseconds the filesystem of `directory` rounds inode times to: 1, or a whole
    second where it keeps no fractions (ext4 with small inodes, some network filesystems)."""
    with tempfile.NamedTemporaryFile(dir=directory, prefix=".clock-") as probe:
        return 1 if os.fstat(probe.fileno()).st_ctime_ns % 1_000_000_000 else 1_000_000_000
