"""Working roots (layers/walkdiff.py) kept under the cache between RUNs and between builds, so
that a build on an image a root already holds copies nothing of it.

An idle root is `<cache>/roots/<name>/` (its tree, and `state.json`: the layers it holds, its
device placeholders, a token that changes each time it is given back). A build takes one by
renaming it into its own temp directory (layers/scratch.py), which is atomic: no two builds
ever hold the same root, and a root whose build died goes with that build's temp directory.
The root that shares the longest run of bottom layers with what the RUN needs is taken and
moved there: back down past the layers it has and the RUN's image has not (from their
snapshots), then up through the layers it lacks. Both cost what those layers hold, not the
image. A root given back is one whose last diff succeeded; a root whose RUN failed is deleted.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import uuid
from dataclasses import dataclass

from layers.image import chain_ids
from layers.scratch import private_dir, tree_size
from layers.snapshots import SnapshotStore
from layers.walkdiff import WorkingRoot

_STATE, _TREE, _CLAIMED = "state.json", "tree", "root-"


@dataclass(frozen=True)
class _Kept:
    name: str
    diff_ids: tuple[str, ...]
    devices: bool
    placeholders: dict[str, tuple[int, int]]
    token: str
    used: float


class RootPool:
    """The idle working roots of a cache (at most `keep` of them, the most recently used)."""

    def __init__(self, directory: str, scratch: str, snapshots: SnapshotStore,
                 keep: int = 2) -> None:
        self.directory, self.scratch, self.snapshots = directory, scratch, snapshots
        self.keep = keep
        self._mine: dict[str, tuple[str, WorkingRoot]] = {}  # name -> (token, its records)
        self._lock = threading.Lock()

    def take(self, diff_ids: tuple[str, ...], snapshots: list[str], form: str,
             devices: bool) -> WorkingRoot:
        """A root holding `diff_ids` (their `snapshots`, lowest first), taken for one RUN."""
        for kept in self._candidates(diff_ids, devices):
            root = self._claim(kept)
            if root is None:
                continue
            common = _common(root.diff_ids, diff_ids)
            try:
                if common < len(root.diff_ids):
                    extra = [self.snapshots.path(chain)
                             for chain in chain_ids(root.diff_ids)[common:]]
                    root.rewind(extra, snapshots[:common], form, diff_ids[:common])
                if root.diff_ids != diff_ids or not root.recorded:
                    root.extend(snapshots[common:], form, diff_ids)
            except BaseException:
                self.discard(root)
                raise
            return root
        root = WorkingRoot(os.path.join(tempfile.mkdtemp(dir=self.scratch, prefix=_CLAIMED),
                                        _TREE), devices)
        os.mkdir(root.path, 0o700)
        try:
            root.extend(snapshots, form, diff_ids)
        except BaseException:
            self.discard(root)
            raise
        return root

    def give(self, root: WorkingRoot) -> None:
        """Keep `root` (its last diff succeeded) for the next RUN, of this build or another."""
        claimed = os.path.dirname(root.path)
        name = os.path.basename(claimed)[len(_CLAIMED):]
        token = uuid.uuid4().hex
        with open(os.path.join(claimed, _STATE), "w") as handle:
            json.dump({"diff_ids": root.diff_ids, "devices": root.devices,
                       "placeholders": root.placeholders, "token": token}, handle)
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        os.rename(claimed, os.path.join(self.directory, name))
        with self._lock:
            self._mine[name] = (token, root)
        for kept in sorted(self._kept(), key=lambda k: k.used, reverse=True)[self.keep:]:
            stale = self._claim(kept)
            if stale is not None:
                self.discard(stale)

    @staticmethod
    def discard(root: WorkingRoot) -> None:
        shutil.rmtree(os.path.dirname(root.path), ignore_errors=True)

    def _candidates(self, diff_ids: tuple[str, ...], devices: bool) -> list[_Kept]:
        """The idle roots worth moving to `diff_ids`, best first: sharing more bottom layers,
        and where the snapshots of the layers to go back past are all there."""
        fitting = []
        for kept in self._kept():
            common = _common(kept.diff_ids, diff_ids)
            if kept.devices != devices or common == 0:
                continue
            if all(os.path.isdir(self.snapshots.path(chain))
                   for chain in chain_ids(kept.diff_ids)[common:]):
                fitting.append((common - len(kept.diff_ids), kept.used, kept))
        return [kept for *_, kept in sorted(fitting, key=lambda f: f[:2], reverse=True)]

    def _kept(self) -> list[_Kept]:
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            state = os.path.join(self.directory, name, _STATE)
            try:
                with open(state) as handle:
                    data = json.load(handle)
                found.append(_Kept(name, tuple(data["diff_ids"]), data["devices"],
                                   {path: tuple(node) for path, node
                                    in data["placeholders"].items()},
                                   data["token"], os.stat(state).st_mtime))
            except (OSError, ValueError, KeyError, TypeError):
                continue  # being given back or taken right now
        return found

    def _claim(self, kept: _Kept) -> WorkingRoot | None:
        """Take `kept` into this build's temp directory; None if another build took it first.
        Its records are this build's own if it last gave it back, else taken afresh later."""
        claimed = os.path.join(self.scratch, _CLAIMED + kept.name)
        try:
            os.rename(os.path.join(self.directory, kept.name), claimed)
        except FileNotFoundError:
            return None
        with self._lock:
            token, root = self._mine.pop(kept.name, (None, None))
        path = os.path.join(claimed, _TREE)
        if root is None or token != kept.token:
            return WorkingRoot.kept(path, kept.devices, kept.diff_ids, kept.placeholders)
        root.path = path
        return root


def _common(held: tuple[str, ...], wanted: tuple[str, ...]) -> int:
    """How many bottom layers the two stacks share."""
    count = 0
    for a, b in zip(held, wanted):
        if a != b:
            break
        count += 1
    return count


def roots_dir(cache_dir: str) -> str:
    return os.path.join(cache_dir, "roots")


def remove_all(cache_dir: str) -> int:
    """Delete the idle roots of a cache (`pybuild prune`: they only save copies); the bytes
    freed. A root a build holds is in its temp directory, not here."""
    directory = roots_dir(cache_dir)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return 0
    freed = 0
    for name in names:
        claimed = os.path.join(private_dir(cache_dir), _CLAIMED + name)
        try:
            os.rename(os.path.join(directory, name), claimed)
        except FileNotFoundError:
            continue
        freed += tree_size(claimed)
        shutil.rmtree(claimed, ignore_errors=True)
    return freed
