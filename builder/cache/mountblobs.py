"""Cache mounts as layer blobs, for `--cache-to ...,mounts=true` and the `--cache-from` that
restores them: a mount's files packed by pybuild's deterministic layer writer (so an unchanged
mount is the same blob, which a destination that has it is not sent again), and unpacked by the
layer unpacker (its safeguards: no entry lands outside the mount, a symlink is followed only
inside it) with device nodes refused: an import is as untrusted as a base image.

Owners, modes, mtimes, symlinks and hard links are kept; sockets are not (layers skip them).
The mount's own directory is not an entry: its owner and mode are the RUN's `uid`, `gid` and
`mode`.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from builder.cache.mounts import reading
from grammar.mounts import CacheMount
from layers.blobstore import BlobStore
from layers.cachemanifest import MountBlob
from layers.overlaydiff import write_upper
from layers.scratch import tree_size
from layers.tarwriter import LayerWriter
from layers.union import UnionView
from layers.unpack import apply_layer


@dataclass(frozen=True)
class MountChoice:
    """A cache mount an export may carry: its files here (`local`), or, when this runner never
    needed them, the blob the import named (`imported`); `size` is the bytes of its files."""

    id: str
    size: int
    local: bool
    imported: MountBlob | None = None


def exportable(used: Iterable[CacheMount]) -> list[str]:
    """The ids of the cache mounts a build used that may be exported, sorted: never one any RUN
    used with `sharing=private`."""
    private = {m.id for m in used if m.sharing == "private"}
    return sorted({m.id for m in used} - private)


def choose(cache_dir: str, ident: str, imported: MountBlob | None) -> MountChoice | None:
    """What an export carries for the mount `ident`: its local files if it has any, else what
    the import named, else nothing."""
    with reading(cache_dir, ident) as data:
        if data is not None:
            return MountChoice(ident, tree_size(data), True)
    if imported is not None:
        return MountChoice(ident, imported.size, False, imported)
    return None


def pack(cache_dir: str, choice: MountChoice, blobs: BlobStore) -> MountBlob:
    """The mount's blob: an imported one as it was, local files as a layer tar in `blobs`
    (named by diff ID), written under a shared lock (no `locked` RUN changes them meanwhile)."""
    if not choice.local:
        return choice.imported
    with reading(cache_dir, choice.id) as data:
        if data is None:  # pruned since it was chosen
            raise FileNotFoundError(f"cache mount {choice.id} is gone")
        with blobs.temp() as (handle, temp_path):
            writer = LayerWriter(handle)
            write_upper(data, writer, UnionView([]))  # over nothing: every file is an entry
            digest = writer.finish()
        blobs.commit(temp_path, digest.diff_id)
        return MountBlob(choice.id, digest.diff_id, choice.size)


def unpack(tar_path: str, directory: str, scratch: str,
           progress: Callable[[int, int], None] | None = None) -> list[str]:
    """Fill the empty `directory` with the uncompressed mount tar at `tar_path`, all at once: it
    is unpacked beside, in `scratch` (on the same filesystem), and renamed over `directory`
    with its owner and mode. Returns the unpacker's warnings; raises LayerError for a refused
    tar, leaving `directory` empty."""
    staging = tempfile.mkdtemp(dir=scratch, prefix="mount-")
    with open(tar_path, "rb") as stream:
        warnings = apply_layer(stream, staging, progress=progress, devices=False)
    st = os.stat(directory)
    os.chown(staging, st.st_uid, st.st_gid)
    os.chmod(staging, st.st_mode & 0o7777)
    os.rename(staging, directory)
    return warnings
