"""`pybuild du` and `pybuild prune`: what the cache holds, and making it smaller.

Pruning removes step results least recently used first, never one a running build has used (its
lease says since when), then deletes the blobs and snapshots nothing left refers to: no remaining
step result and no image of the local store (images go with `pybuild rmi`), and the temp files of
builds that died (killed, or a crashed machine) before removing them (layers/scratch.py), and
the working roots kept for RUN where overlayfs is not used (layers/rootpool.py), which only save
copying an image again, and what ADD downloaded or checked out of git that no build used for as
long as the prune asks (builder/cache/fetched.py).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from dataclasses import dataclass

from builder.cache import fetched
from builder.cache.index import CacheIndex
from builder.cache.root import CacheRoot, default_cache_dir, secure_cache_dir
from builder.plan.state import RecordedState
from builder.units import human_size, parse_size
from grammar.durations import parse_duration
from layers.image import chain_ids
from layers.imagestore import ImageStore
from layers.rootpool import remove_all as remove_roots, roots_dir
from layers.scratch import leftovers, sweep, tree_size
from layers.snapshots import chain_of



@dataclass(frozen=True)
class Usage:
    steps: int
    blobs: int
    blob_bytes: int
    snapshots: int
    snapshot_bytes: int
    dead_temp: int  # temp directories of dead builds
    dead_temp_bytes: int
    roots_bytes: int  # working roots kept for RUN without overlayfs


def usage(cache_dir: str) -> Usage:
    index = CacheIndex(cache_dir)
    try:
        steps = len(index.steps())
    finally:
        index.close()
    root = CacheRoot(cache_dir)
    blob_sizes = _blob_sizes(cache_dir)
    snapshots = root.snapshot_names()
    dead = leftovers(cache_dir)
    return Usage(steps, len(blob_sizes), sum(blob_sizes.values()), len(snapshots),
                 sum(tree_size(os.path.join(root.snapshots, n)) for n in snapshots),
                 dead.count, dead.size, tree_size(roots_dir(cache_dir)))


def prune(cache_dir: str, *, everything: bool = False, keep_bytes: int | None = None,
          older_than: float | None = None) -> tuple[int, int]:
    """Remove step results (all; beyond a size budget, least recently used first; or unused for
    `older_than` seconds), then unreferenced blobs and snapshots, the temp files of dead
    builds and the kept working roots, and (all, or unused for `older_than`) ADD's kept
    downloads and git checkouts. Returns (results removed, bytes freed)."""
    index = CacheIndex(cache_dir)
    try:
        records = index.steps()
        protected = index.oldest_live_lease() or time.time()
        removable = [r for r in records if r.last_used < protected]
        doomed = set()
        if everything:
            doomed = {r.key for r in removable}
        elif older_than is not None:
            doomed = {r.key for r in removable if r.last_used < time.time() - older_than}
        if keep_bytes is not None:
            total = usage(cache_dir).blob_bytes
            sizes = _blob_sizes(cache_dir)
            for record in removable:
                if total <= keep_bytes:
                    break
                if record.key not in doomed:
                    doomed.add(record.key)
                    total -= sizes.get(record.diff_id, 0)
        for key in doomed:
            index.forget(key)
        kept = [r for r in records if r.key not in doomed]
    finally:
        index.close()
    freed = _collect(cache_dir, kept) + sweep(cache_dir).size + remove_roots(cache_dir)
    if everything or older_than is not None:
        unused_since = protected if everything else min(protected, time.time() - older_than)
        freed += fetched.remove_unused(cache_dir, unused_since).bytes
    return len(doomed), freed


def _collect(cache_dir: str, kept) -> int:
    """Delete blobs and snapshots that no kept result and no stored image refers to."""
    store = ImageStore(cache_dir)
    blobs: set[str] = set()
    chains: set[str] = set()
    for record in kept:
        diff_ids = RecordedState.of(record.state).diff_ids
        blobs.update(diff_ids)
        chains.update(chain_ids(diff_ids))
    for image in store.list():
        blobs.update(image.diff_ids)
        blobs.update((image.manifest_digest, image.image_id))
        chains.update(chain_ids(image.diff_ids))
    freed = 0
    root = CacheRoot(cache_dir)
    for name in root.blob_names():
        if f"sha256:{name}" not in blobs and not name.startswith("."):
            freed += _unlink(os.path.join(root.blobs, name))
    present = set(root.blob_names())
    for name in _names(root.variants):
        if name not in present and not name.startswith("."):
            shutil.rmtree(os.path.join(root.variants, name), ignore_errors=True)
    for name in root.snapshot_names():
        if chain_of(name) not in chains and not name.startswith("."):
            path = os.path.join(root.snapshots, name)
            freed += tree_size(path)
            shutil.rmtree(path, ignore_errors=True)
    return freed


def _names(directory: str) -> list[str]:
    return os.listdir(directory) if os.path.isdir(directory) else []


def _unlink(path: str) -> int:
    """The size of a blob removed here; 0 when a prune running beside this one removed it first."""
    size = tree_size(path)
    try:
        os.unlink(path)
    except FileNotFoundError:
        return 0
    return size


def _blob_sizes(cache_dir: str) -> dict[str, int]:
    """Sizes by digest of the blobs present; one a concurrent prune removed is left out."""
    root = CacheRoot(cache_dir)
    sizes = {}
    for name in root.blob_names():
        try:
            sizes[f"sha256:{name}"] = os.path.getsize(os.path.join(root.blobs, name))
        except FileNotFoundError:
            continue
    return sizes


def parse_age(text: str) -> float:
    """Seconds from a Go duration (`30m`, `1h30m`), or days (`7d`), as `until=` takes them."""
    try:
        nanoseconds = parse_duration(text.strip(), days=True)
    except ValueError:
        nanoseconds = -1
    if nanoseconds < 0:
        raise ValueError(f"not a duration: {text!r} (e.g. 30m, 24h, 7d)")
    return nanoseconds / 1e9


def _rootless_namespace() -> None:
    """Not as root, enter the user namespace a rootless build has: its snapshots hold files of
    subordinate ids, which only that namespace may read and remove."""
    if os.geteuid() != 0:
        from builder.sandbox import prepare
        prepare("auto")


def du_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="pybuild du", description="Show what the cache holds.")
    parser.add_argument("--cache-dir", metavar="DIR")
    options = parser.parse_args(argv)
    _rootless_namespace()
    cache_dir = secure_cache_dir(options.cache_dir or default_cache_dir())
    found = usage(cache_dir)
    print(f"cache entries  {found.steps}")
    print(f"blobs          {found.blobs} ({human_size(found.blob_bytes)})")
    print(f"snapshots      {found.snapshots} ({human_size(found.snapshot_bytes)})")
    print(f"temporary files of dead builds  {found.dead_temp} ({human_size(found.dead_temp_bytes)})")
    print(f"working roots  {human_size(found.roots_bytes)}")
    sources = fetched.usage(cache_dir)
    print(f"ADD downloads and git checkouts  {sources.entries} ({human_size(sources.bytes)})")
    from builder.cache.mounts import listed
    mounts = listed(cache_dir)
    print(f"cache mounts   {len(mounts)} ({human_size(sum(m.size for m in mounts))})")
    for mount in mounts:
        print(f"  {human_size(mount.size):>8}  {mount.id}")
    print("total          " + human_size(found.blob_bytes + found.snapshot_bytes
                                          + found.dead_temp_bytes + found.roots_bytes
                                          + sources.bytes + sum(m.size for m in mounts)))
    return 0


def prune_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="pybuild prune", description="Remove build cache entries, least recently used first, "
        "never one a running build uses; then the blobs and snapshots nothing refers to, and the "
        "temporary files of builds that died; with --all or until=, also ADD's downloads and git "
        "checkouts unused that long. Without options, entries unused for 7 days go.")
    parser.add_argument("--all", action="store_true", help="remove every cache entry")
    parser.add_argument("--keep-storage", metavar="SIZE",
                        help="remove least recently used entries until the blobs fit in SIZE")
    parser.add_argument("--filter", action="append", default=[], metavar="until=DURATION",
                        help="remove entries unused for longer than DURATION (30m, 24h, 7d); "
                             "type=exec.cachemount removes only the RUN --mount=type=cache "
                             "directories (as `--all` removes them too)")
    parser.add_argument("--cache-dir", metavar="DIR")
    options = parser.parse_args(argv)
    try:
        keep = parse_size(options.keep_storage, decimal=True) if options.keep_storage else None
        older = None
        only_mounts = False
        for item in options.filter:
            key, _, value = item.partition("=")
            if key == "type" and value == "exec.cachemount":
                only_mounts = True
                continue
            if key != "until":
                raise ValueError(f"unknown filter {key!r} (until=DURATION or "
                                 "type=exec.cachemount)")
            older = parse_age(value)
    except ValueError as error:
        print(f"pybuild prune: {error}", file=sys.stderr)
        return 2
    if not options.all and keep is None and older is None and not only_mounts:
        older = 7 * 86400
    _rootless_namespace()
    cache_dir = secure_cache_dir(options.cache_dir or default_cache_dir())
    if options.all or only_mounts:
        from builder.cache.mounts import remove_all
        count, size = remove_all(cache_dir)
        print(f"removed {count} cache mounts, freed {human_size(size)}")
        if only_mounts and keep is None and older is None and not options.all:
            return 0
    removed, freed = prune(cache_dir, everything=options.all, keep_bytes=keep, older_than=older)
    print(f"removed {removed} cache entries, freed {human_size(freed)}")
    return 0
