"""The cache input of a COPY or ADD: a manifest of what it reads, and its digest.

Only what ends up in the layer enters it: paths, types, sizes, link targets, content digests,
and the mode unless --chmod replaces it (context files are always owned by root in the layer, so
their owners never enter; mtimes are left out, as BuildKit does, so a fresh checkout hits). Files
of another stage are covered by that stage's key. Content digests are remembered per file by
(size, mtime, ctime, inode, mode): an unchanged context is stat-ed, not read, while any real
change (even with the mtime put back) changes the ctime and is read again.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass
from typing import Iterable

from builder.cacheindex import FileMemo
from builder.copy import DataSource
from builder.sourcetree import Found
from builder.steps import CopySelection

_CHUNK = 1 << 20
_SMALL = 8 << 20


@dataclass
class SourceScan:
    """The manifest rows of a selection, with the content digests the memo could not supply
    still missing (""), and where they go."""

    rows: list[list]
    unknown: list[tuple[int, Found]]
    unknown_bytes: int
    total_bytes: int

    def fill(self, digests: dict[str, str]) -> list[tuple[str, FileMemo]]:
        """Put in the digests of the unknown files (keyed by host path); returns what the memo
        should learn."""
        learned = []
        missing = [found for _, found in self.unknown if found.host not in digests]
        digests = {**digests, **hash_files(missing)}
        for row_index, found in self.unknown:
            value = digests[found.host]
            self.rows[row_index][5] = value
            st = found.st
            learned.append((found.host, FileMemo(st.st_size, st.st_mtime_ns, st.st_ctime_ns,
                                                 st.st_ino, st.st_mode, value)))
        return learned

    def cheap_to_hash_first(self) -> bool:
        """Whether reading the unknown files before deciding costs little (a few edited files),
        rather than a cold context, which is better hashed while the layer is written."""
        return self.unknown_bytes <= max(_SMALL, self.total_bytes // 10)


def scan(selection: CopySelection, memos: dict[str, FileMemo]) -> SourceScan:
    """Rows `[path, type, mode, size, link, digest]` of what the selection reads."""
    result = SourceScan([], [], 0, 0)
    keep_mode = selection.spec.chmod is None
    for source in selection.sources:
        if isinstance(source, DataSource):
            result.rows.append([f"<<{source.name}", "data", None, len(source.data), "",
                                hashlib.sha256(source.data).hexdigest()])
        elif selection.from_stage is not None:
            result.rows.append([source.found.rel, "stage", None, 0, "", ""])
        else:
            found = source.found
            entries = source.tree.walk(found.rel) if stat.S_ISDIR(found.st.st_mode) else ()
            for item in (found, *entries):
                _add_row(result, item, keep_mode, memos)
    return result


def hash_files(files: Iterable[Found]) -> dict[str, str]:
    digests = {}
    for found in files:
        hasher = hashlib.sha256()
        with open(found.host, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                hasher.update(chunk)
        digests[found.host] = hasher.hexdigest()
    return digests


def digest(rows: Iterable[list]) -> str:
    return "sha256:" + hashlib.sha256(json.dumps(list(rows), separators=(",", ":")).encode()).hexdigest()


def _add_row(result: SourceScan, found: Found, keep_mode: bool, memos: dict[str, FileMemo]) -> None:
    st = found.st
    mode = stat.S_IMODE(st.st_mode) if keep_mode else None
    if stat.S_ISREG(st.st_mode):
        result.total_bytes += st.st_size
        memo = memos.get(found.host)
        if memo is not None and (memo.size, memo.mtime_ns, memo.ctime_ns, memo.ino, memo.mode) == (
                st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_mode):
            value = memo.digest
        else:
            value = ""
            result.unknown.append((len(result.rows), found))
            result.unknown_bytes += st.st_size
        result.rows.append([found.rel, "f", mode, st.st_size, "", value])
    elif stat.S_ISLNK(st.st_mode):
        result.rows.append([found.rel, "l", None, 0, os.readlink(found.host), ""])
    else:
        result.rows.append([found.rel, "d" if stat.S_ISDIR(st.st_mode) else "s", mode, 0, "", ""])


def describe_change(old: list | None, new: list | None) -> str:
    """The first difference between two manifests, as a person would say it."""
    if old is None or new is None:
        return "the copied files changed"
    before = {row[0]: row for row in old}
    after = {row[0]: row for row in new}
    for path in sorted(set(before) | set(after)):
        if path not in before:
            return f"{path} added"
        if path not in after:
            return f"{path} removed"
        if before[path] != after[path]:
            a, b = before[path], after[path]
            if a[1] != b[1]:
                return f"{path} changed type"
            if a[5] != b[5] or a[3] != b[3] or a[4] != b[4]:
                return f"{path} changed"
            return f"mode of {path} changed"
    return "the copied files changed"
