"""RUN --mount inside the sandbox: bind mounts, tmpfs and files (secrets) put into the RUN's root
in its private mount namespace, after the image is mounted and before pivot_root, so the mounted
content never reaches the overlay's upper dir (nor a root changed in place).

Targets are made as BuildKit makes them: missing parent directories and a missing directory
target are created in the root (as root, 0755) and stay in the layer; a missing file target is
an empty stub the mount sits on, taken out of the layer after the RUN (`remove_stubs`).
Targets are resolved in a child chrooted into the root, so a symlink of the image cannot send a
mount anywhere on the host; the sources reach that child as descriptors opened before the chroot
(`/proc/self/fd/N`, the root's own /proc).

A secret's bytes are written only to a tmpfs private to the sandbox's mount namespace: they are
never on disk, and vanish with the namespace.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from builder.sandbox import linux, process, rootfs
from layers.union import UnionView


@dataclass(frozen=True)
class MountPoint:
    """One mount of a RUN: `kind` "bind" (the host path `source`), "tmpfs" (`options`, e.g.
    `size=65536k`) or "file" (`content`, with `mode`, `uid`, `gid`); `target` is absolute in
    the root."""

    target: str
    kind: str
    source: str = ""
    readonly: bool = False
    options: str = ""
    content: bytes = field(default=b"", repr=False, compare=False)
    mode: int = 0o400
    uid: int = 0
    gid: int = 0

    def is_file(self) -> bool:
        return self.kind == "file" or (self.kind == "bind" and not os.path.isdir(self.source))


def missing_file_targets(mounts: tuple[MountPoint, ...], lowerdirs: tuple[str, ...],
                         root: str | None) -> tuple[str, ...]:
    """The file targets the image lacks (judged before the RUN): their stubs go after it."""
    view = UnionView(list(lowerdirs)) if root is None else None
    missing = []
    for mount in mounts:
        rel = mount.target.strip("/")
        if not mount.is_file():
            continue
        present = (view.find(rel) is not None if view is not None
                   else os.path.lexists(os.path.join(root, rel)))
        if not present:
            missing.append(rel)
    return tuple(missing)


def remove_stubs(upper: str, stubs: tuple[str, ...]) -> None:
    """Take the empty file stubs the mounts sat on out of the upper dir (or root)."""
    for rel in stubs:
        path = os.path.join(upper, rel)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if os.path.isfile(path) and not os.path.islink(path) and st.st_size == 0:
            os.unlink(path)


def mount_all(root: str, mounts: tuple[MountPoint, ...], scratch: str) -> None:
    """In the sandbox's mount namespace (its pid 1), before pivot_root: every mount in order."""
    if not mounts:
        return
    descriptors = []
    files = os.path.join(scratch, "mounted-files")
    if any(m.kind == "file" for m in mounts):
        os.mkdir(files, 0o700)
        linux.mount("tmpfs", files, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC,
                    "mode=700,size=16m")
    for number, mount in enumerate(mounts):
        source = mount.source
        if mount.kind == "file":
            source = os.path.join(files, str(number))
            descriptor = os.open(source, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(descriptor, mount.content)
                os.fchown(descriptor, mount.uid, mount.gid)
                os.fchmod(descriptor, mount.mode)
            finally:
                os.close(descriptor)
        descriptors.append(os.open(source, os.O_PATH) if source else -1)
    steps = [("chroot", lambda: _enter(root))]
    steps += [(f"--mount target {mount.target}",
               lambda m=mount, d=descriptor, f=mount.is_file(): _place(m, d, f))
              for mount, descriptor in zip(mounts, descriptors)]
    failure = process.attempt(*steps)
    for descriptor in descriptors:
        if descriptor >= 0:
            os.close(descriptor)
    if failure is not None:
        raise OSError(f"RUN --mount: {failure}")


def _enter(root: str) -> None:
    os.chroot(root)
    os.chdir("/")
    os.umask(0o022)


def _place(mount: MountPoint, descriptor: int, is_file: bool) -> None:
    """In the chrooted child (where host paths mean nothing): make the target, mount over it."""
    target = "/" + mount.target.strip("/")
    parent = os.path.dirname(target)
    try:
        os.makedirs(parent, 0o755, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ValueError(f"{parent} is not a directory") from None
    if is_file:
        if not os.path.lexists(target):
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    elif not os.path.isdir(target):
        if os.path.lexists(target):
            raise ValueError(f"{target} is not a directory")
        os.mkdir(target, 0o755)
    if mount.kind == "tmpfs":
        linux.mount("tmpfs", target, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV,
                    mount.options or None)
        return
    linux.mount(f"/proc/self/fd/{descriptor}", target, None, linux.MS_BIND | linux.MS_REC)
    if mount.readonly or mount.kind == "file":
        rootfs.read_only(target)
