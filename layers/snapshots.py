"""Snapshots: each layer unpacked once as a directory in overlayfs format, named by chain ID.

A stack of snapshots is directly an overlay `lowerdir` (for RUN) and a UnionView (for COPY --from
and name lookups). They are made only when something needs a layer's files, shared by every build
on the cache root, and written to a temp name then renamed, so a crash never leaves half a
snapshot under a real name.
"""
from __future__ import annotations

import os
import shutil
import tempfile

from layers.errors import LayerError
from layers.image import chain_ids
from layers.unpack import apply_layer


class SnapshotStore:
    def __init__(self, root: str) -> None:
        self.dir = os.path.join(root, "snapshots")
        os.makedirs(self.dir, exist_ok=True)

    def path(self, chain_id: str) -> str:
        return os.path.join(self.dir, chain_id.replace(":", "-"))

    def ensure(self, diff_ids: tuple[str, ...], blob_path) -> list[str]:
        """The snapshot directories of a layer stack, lowest first, unpacking what is missing.
        `blob_path(diff_id)` names the stored uncompressed layer tar."""
        dirs = []
        for diff_id, chain_id in zip(diff_ids, chain_ids(diff_ids)):
            final = self.path(chain_id)
            if not os.path.isdir(final):
                temp = tempfile.mkdtemp(dir=self.dir, prefix=".tmp-")
                try:
                    with open(blob_path(diff_id), "rb") as layer:
                        try:
                            apply_layer(layer, temp, whiteouts="overlay")
                        except LayerError as error:  # say which layer: a base image's, maybe
                            raise LayerError(f"unpacking layer {diff_id[:19]}: {error}") from None
                    os.chmod(temp, 0o755)
                    os.rename(temp, final)
                except BaseException as error:
                    shutil.rmtree(temp, ignore_errors=True)
                    if not (isinstance(error, OSError) and os.path.isdir(final)):
                        raise  # a concurrent build renaming the same snapshot first is fine
            dirs.append(final)
        return dirs

    def adopt(self, chain_id: str, directory: str) -> str:
        """Make an existing overlay-format directory (a RUN's upper dir) the snapshot of
        `chain_id`, by rename: no copy. If another build got there first, ours is dropped."""
        final = self.path(chain_id)
        try:
            os.rename(directory, final)
        except OSError:
            if not os.path.isdir(final):
                raise
            shutil.rmtree(directory, ignore_errors=True)
        return final
