"""Where pybuild keeps its cache (blobs, snapshots, images) unless told otherwise."""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from layers.blobstore import blobs_dir, variants_dir
from layers.snapshots import snapshots_dir


@dataclass(frozen=True)
class CacheRoot:
    """Every place under a cache root the builder names. The stores of layers/ (blobs, their
    compressed variants, snapshots, images, temp files) name their own directories, given the
    root; these properties ask them rather than spell the names again."""

    path: str

    @property
    def blobs(self) -> str:
        return blobs_dir(self.path)

    @property
    def variants(self) -> str:
        """The records of each layer's compressed blobs (layers/registry/variants.py)."""
        return variants_dir(self.path)

    @property
    def snapshots(self) -> str:
        return snapshots_dir(self.path)

    @property
    def mounts(self) -> str:
        """RUN --mount=type=cache directories, one per cache id (builder/cache/mounts.py)."""
        return os.path.join(self.path, "mounts")

    @property
    def downloads(self) -> str:
        """What ADD fetched from URLs, one directory per URL (builder/sources/download.py)."""
        return os.path.join(self.path, "downloads")

    @property
    def git(self) -> str:
        """What ADD checked out of git, one directory per commit (builder/sources/gitrepo.py)."""
        return os.path.join(self.path, "git")

    @property
    def step_index(self) -> str:
        """The step cache's SQLite database (builder/cache/index.py)."""
        return os.path.join(self.path, "index.sqlite")

    @property
    def sandbox_probes(self) -> str:
        """What the sandbox's probes found on this host (builder/sandbox/remembered.py)."""
        return os.path.join(self.path, "sandbox-probes.json")

    def blob_names(self) -> list[str]:
        """The names in the blob directory (a digest's hex each), none when there is none."""
        return os.listdir(self.blobs) if os.path.isdir(self.blobs) else []

    def snapshot_names(self) -> list[str]:
        return os.listdir(self.snapshots) if os.path.isdir(self.snapshots) else []


def default_cache_dir() -> str:
    """`$PYBUILD_CACHE_DIR`, else `$XDG_CACHE_HOME/pybuild` (default ~/.cache/pybuild)."""
    if os.environ.get("PYBUILD_CACHE_DIR"):
        return os.environ["PYBUILD_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "pybuild")


def secure_cache_dir(path: str) -> str:
    """Make the cache root `path` (and the parents it lacks). As root it and the parents made
    here are 0700, and an existing root made earlier with another mode is made 0700 again: the
    snapshots and RUN's scratch directories under it hold the real device nodes of images (base
    layers, ADD archives, RUN mknod), which must not be usable by other users of the host. RUN
    cannot use them either: its root is mounted nodev (README, "How RUN runs"). Without root no
    device node can be made, and the cache keeps its modes; a rootless build, root of its user
    namespace, makes its own cache private too, where it owns it."""
    private = os.geteuid() == 0
    missing = []
    head = os.path.abspath(path)
    while not os.path.lexists(head):
        missing.append(head)
        head = os.path.dirname(head)
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700 if private else 0o777)
        except FileExistsError:
            pass  # made meanwhile by a concurrent build
    if private and os.path.isdir(path):
        for directory in [*missing, path]:
            if stat.S_IMODE(os.stat(directory).st_mode) != 0o700:
                try:
                    os.chmod(directory, 0o700)
                except PermissionError:
                    pass  # a user namespace's root over a directory it does not own
    return path
