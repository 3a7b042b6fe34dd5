"""Where pybuild keeps its cache (blobs, snapshots, images) unless told otherwise."""
from __future__ import annotations

import os


def default_cache_dir() -> str:
    """`$PYBUILD_CACHE_DIR`, else `$XDG_CACHE_HOME/pybuild` (default ~/.cache/pybuild)."""
    if os.environ.get("PYBUILD_CACHE_DIR"):
        return os.environ["PYBUILD_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "pybuild")
