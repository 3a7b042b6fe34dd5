"""Snapshots: each layer unpacked once as a directory, named by chain ID.

A stack of snapshots is directly an overlay `lowerdir` (for RUN) and a UnionView (for COPY --from
and name lookups). They keep deletions in overlayfs's form where the cache's filesystem can hold
it (0/0 char devices, opaque xattrs), else as the layer tar's `.wh.` files (layers/union.py): a
container's overlayfs root, a user without CAP_MKNOD. The form is probed once per store and is
part of the directory's name (`<chain>` or `<chain>.wh`), so a cache shared between places
that differ (a volume used on the host and in a container) never reads one form as the other. They are made only when something needs a layer's files, shared by every build
on the cache root, and written in the process's temp directory (layers/scratch.py) then renamed,
so a crash never leaves half a snapshot under a real name, and the next build removes the half.

Device nodes of a layer (a base image's, an ADD archive's) are real nodes here when the process
may make them (root), not an encoding only the layer writer understands: RUN, COPY --from and the
walk diff then see them as Docker shows them, with nothing to translate. They must therefore be
unusable by anyone else: the builder keeps the cache root 0700 (builder/cachedir.py) and mounts
RUN's root nodev (builder/sandbox/rootfs.py), and chroot's copy of the image has placeholders
(layers/walkdiff.py). Without root they are left out (apply_layer warns); the layer keeps them.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable
from functools import cached_property
from typing import BinaryIO, ContextManager

from layers.errors import LayerError
from layers.image import chain_ids
from layers.scratch import private_dir
from layers.union import FILES, OVERLAY, UnionView, mark_opaque
from layers.unpack import apply_layer

FILES_SUFFIX = ".wh"


def chain_of(name: str) -> str:
    """The chain ID a snapshot directory's name stands for, in either form."""
    return name.removesuffix(FILES_SUFFIX).replace("-", ":", 1)


def form_for(directory: str) -> str:
    """OVERLAY if `directory`'s filesystem can hold a 0/0 char device and an opaque xattr
    (as this process may set them), else FILES. `PYBUILD_WHITEOUT_FILES=1` forces FILES."""
    if os.environ.get("PYBUILD_WHITEOUT_FILES") == "1":
        return FILES
    probe = tempfile.mkdtemp(dir=directory, prefix=".form-probe-")
    try:
        os.mknod(os.path.join(probe, "whiteout"), stat.S_IFCHR, 0)
        mark_opaque(probe)
        return OVERLAY
    except OSError:
        return FILES
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def snapshots_dir(root: str) -> str:
    """Where the snapshots of a cache root lie, one directory per chain ID's hex."""
    return os.path.join(root, "snapshots")


Progress = Callable[[int, int], None]
# Entered around the reading of one layer into a snapshot, with its diff ID and the bytes to read
# (None: unknown); gives the progress(entries, bytes read) to call, or None.
Unpacking = Callable[[str, int | None], ContextManager[Progress | None]]


@contextlib.contextmanager
def _unwatched(diff_id: str, size: int | None):
    yield None


class SnapshotStore:
    def __init__(self, root: str) -> None:
        self.root = root
        self.dir = snapshots_dir(root)
        os.makedirs(self.dir, exist_ok=True)
        self._guard = threading.Lock()
        self._unpacking: dict[str, threading.Lock] = {}  # chain ID -> held while it is unpacked

    @cached_property
    def form(self) -> str:
        return form_for(self.dir)

    def path(self, chain_id: str) -> str:
        suffix = FILES_SUFFIX if self.form == FILES else ""
        return os.path.join(self.dir, chain_id.replace(":", "-") + suffix)

    def view(self, directories: list[str]) -> UnionView:
        """The merged view of snapshot directories of this store, lowest first."""
        return UnionView(directories, self.form)

    def ensure(self, diff_ids: tuple[str, ...], blob_path,
               unpacking: Unpacking | None = None) -> list[str]:
        """The snapshot directories of a layer stack, lowest first, unpacking what is missing.
        `blob_path(diff_id)` names the stored uncompressed layer tar; `unpacking(diff_id, size)`,
        if given, is entered around each unpack and gives the progress(entries, bytes) to call.
        Threads of this process that want the same layer at the same time unpack it once."""
        dirs = []
        for diff_id, chain_id in zip(diff_ids, chain_ids(diff_ids)):
            final = self.path(chain_id)
            with self._guard:
                claim = self._unpacking.setdefault(chain_id, threading.Lock())
            with claim:
                self._unpack(diff_id, chain_id, blob_path, unpacking)
            dirs.append(final)
        return dirs

    def _unpack(self, diff_id: str, chain_id: str, blob_path,
                unpacking: Unpacking | None) -> None:
        if os.path.isdir(self.path(chain_id)):
            return
        temp = self.temp()
        try:
            with open(blob_path(diff_id), "rb") as layer, \
                    (unpacking or _unwatched)(diff_id, os.fstat(layer.fileno()).st_size) \
                    as progress:
                self.unpack(layer, temp, diff_id, progress)
            self.commit(temp, chain_id)
        except BaseException:
            self.discard(temp)
            raise

    def temp(self) -> str:
        """A new directory to unpack a layer into, then to `commit` or `discard`."""
        return tempfile.mkdtemp(dir=private_dir(self.root), prefix="snapshot-")

    def unpack(self, layer: BinaryIO, temp: str, diff_id: str,
               progress: Progress | None = None) -> None:
        """Apply the layer tar `layer` (of `diff_id`) to `temp`, in this store's form."""
        try:
            apply_layer(layer, temp, whiteouts=self.form, progress=progress)
        except LayerError as error:  # say which layer: a base image's, maybe
            raise LayerError(f"unpacking layer {diff_id[:19]}: {error}") from None

    def commit(self, temp: str, chain_id: str) -> None:
        """Make an unpacked `temp` the snapshot of `chain_id` (see `adopt`)."""
        os.chmod(temp, 0o755)
        self.adopt(chain_id, temp)

    @staticmethod
    def discard(temp: str) -> None:
        shutil.rmtree(temp, ignore_errors=True)

    def adopt(self, chain_id: str, directory: str) -> str:
        """Make an existing directory in this store's form (a RUN's upper dir) the snapshot of
        `chain_id`, by rename: no copy. If another build got there first, ours is dropped."""
        final = self.path(chain_id)
        try:
            os.rename(directory, final)
        except OSError:
            if not os.path.isdir(final):
                raise
            shutil.rmtree(directory, ignore_errors=True)
        return final
