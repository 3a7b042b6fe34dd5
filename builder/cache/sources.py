"""The cache input of a COPY or ADD: a manifest of what it reads, and its digest.

Only what ends up in the layer enters it: paths, types, sizes, link targets, content digests,
and the mode unless --chmod replaces it (context files are always owned by root in the layer, so
their owners never enter; mtimes are left out, as BuildKit does, so a fresh checkout hits). Files
of another stage or an image are covered by that stage's key or that image's ID; those of a
directory build context (COPY --from=NAME) are read like the context's. A RUN's bind mount of a
stage or an image is keyed on what it binds, owners included (`bound_digest`), as BuildKit keys it. Content digests are
remembered per file by (size, mtime, ctime, inode, mode): an unchanged context is stat-ed, not
read, while any real change (even with the mtime put back) changes the ctime and is read again.
"""
from __future__ import annotations

import hashlib
import json
import marshal
import os
from dataclasses import dataclass
from stat import S_IMODE, S_ISDIR, S_ISLNK, S_ISREG
from typing import Iterable

from builder.cache.index import FileMemo
from builder.steps.copy import DataSource, GitSource, TreeSource, UrlSource
from builder.sources.tree import ContextTree, Found, Tree
from builder.steps.files import CopySelection

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


def scan(selection: CopySelection, memos: dict[str, tuple]) -> SourceScan:
    """Rows `[path, type, mode, size, link, digest]` of what the selection reads. `memos` maps
    host paths to the fields of a FileMemo."""
    result = SourceScan([], [], 0, 0)
    keep_mode = selection.spec.chmod is None
    for source in selection.sources:
        if isinstance(source, DataSource):
            result.rows.append([f"<<{source.name}", "data", None, len(source.data), "",
                                hashlib.sha256(source.data).hexdigest()])
        elif isinstance(source, UrlSource):  # its content, not its URL's answer, as BuildKit
            result.rows.append([source.name, "url", None, 0, "", source.digest()])
        elif isinstance(source, GitSource):  # the commit, not the URL, as BuildKit
            result.rows.append(["", "git", None, 0, "", source.key()])
        elif not source.tree.confined:  # a stage's or an image's: its key covers its files
            result.rows.append([source.name or source.found.rel, "stage", None, 0, "", ""])
        else:
            found = source.found
            entries = source.walk() if S_ISDIR(found.st.st_mode) else ()
            # A followed symlink's row has the link's path: a file lands under that name.
            named = found._replace(rel=source.name) if source.name else found
            _add_rows(result, (named, *entries), keep_mode, memos)
    return result


def signature(selection: CopySelection) -> str | None:
    """A digest of what a scan of `selection` depends on, from the context walk's lstats alone:
    the paths, and per entry the fields the memo trusts (mode, size, mtime, ctime, inode). Equal
    signatures mean equal manifests, so a rebuild of an unchanged context needs neither the memo
    nor the rows (most of its time with 20,000 files). None when the selection reads anything but
    context files. The bytes hashed are marshal's (version 2: fast, no references); a Python that
    writes them differently only misses."""
    parts: list = [selection.spec.chmod is None]
    for source in selection.sources:
        if not isinstance(source, TreeSource) or not isinstance(source.tree, ContextTree):
            return None
        found = source.found
        entries = source.walk() if S_ISDIR(found.st.st_mode) else ()
        parts.append(source.tree.root)
        if source.name:  # a followed symlink: the file lands under the link's name
            parts.append(source.name)
        parts.append(_trusted_fields((found, *entries)))
    return hashlib.sha256(marshal.dumps(parts, 2)).hexdigest()


def context_signature(context: ContextTree) -> str:
    """`signature` of the whole context's walk, for the digest provenance names the context by:
    equal signatures mean an equal digest, so the provenance of an unchanged context needs
    neither the memo nor a pass over the files."""
    parts = ["context digest", context.root, _trusted_fields(context.walk(""))]
    return hashlib.sha256(marshal.dumps(parts, 2)).hexdigest()


def _trusted_fields(found: Iterable[Found]) -> list[tuple]:
    """Per entry, its path and the lstat fields a memo trusts."""
    return [(rel, st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
            for rel, _, st in found]


def hash_files(files: Iterable[Found]) -> dict[str, str]:
    digests = {}
    for found in files:
        hasher = hashlib.sha256()
        with open(found.host, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                hasher.update(chunk)
        digests[found.host] = hasher.hexdigest()
    return digests


def manifest(rows: Iterable[list]) -> tuple[str, str]:
    """The digest of a manifest, and the JSON text it is the digest of (what the index stores:
    serialising 20,000 rows takes 40 ms here, so it is done once)."""
    text = json.dumps(list(rows), separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest(), text


def remembered(memo: tuple | None, st: os.stat_result) -> str | None:
    """The content digest a file's memo (FileMemo fields) holds, when the memo's size, times,
    inode and mode are the file's `st`; else None, and the file must be read."""
    if memo is not None and memo[:5] == (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino,
                                         st.st_mode):
        return memo[5]
    return None


def _add_rows(result: SourceScan, found: Iterable[Found], keep_mode: bool,
              memos: dict[str, tuple]) -> None:
    """One row per entry; a regular file's digest comes from its memo when the memo's stat
    fields are the file's. Every entry of a large context passes here: keep it lean."""
    rows, unknown, get = result.rows, result.unknown, memos.get
    total = unknown_bytes = 0
    for item in found:
        rel, host, st = item
        mode = st.st_mode
        if S_ISREG(mode):
            size = st.st_size
            total += size
            value = remembered(get(host), st)
            if value is None:
                value = ""
                unknown.append((len(rows), item))
                unknown_bytes += size
            rows.append([rel, "f", S_IMODE(mode) if keep_mode else None, size, "", value])
        elif S_ISLNK(mode):
            rows.append([rel, "l", None, 0, os.readlink(host), ""])
        else:
            rows.append([rel, "d" if S_ISDIR(mode) else "s", S_IMODE(mode) if keep_mode else None,
                         0, "", ""])
    result.total_bytes += total
    result.unknown_bytes += unknown_bytes


def bound_digest(tree: Tree, top: Found | None) -> str:
    """The digest of `top` of a stage's or an image's tree and everything below it, as a bind
    mount shows it: paths under `top`, types, modes, owners, sizes, link targets, content
    digests (None: an empty tree's root)."""
    if top is None:
        return manifest([])[0]
    below = tree.walk(top.rel) if S_ISDIR(top.st.st_mode) else ()
    prefix = len(top.rel) + 1 if top.rel else 0
    rows = []
    for rel, host, st in (top._replace(rel=""), *below):
        mode = st.st_mode
        link = os.readlink(host) if S_ISLNK(mode) else ""
        digest = hash_files([Found(rel, host, st)])[host] if S_ISREG(mode) else ""
        rows.append([rel[prefix:] if rel else ".", mode, st.st_uid, st.st_gid,
                     st.st_size if S_ISREG(mode) else 0, link, digest])
    return manifest(rows)[0]


def describe_change(old: list | None, new: list | None) -> str:
    """The first difference between two manifests, as a person would say it."""
    if old is None or new is None:
        return "the copied files changed"
    before = {row[0]: row for row in old}
    after = {row[0]: row for row in new}
    differing = [path for path, row in after.items() if before.get(path) != row]
    differing += [path for path in before if path not in after]
    for path in sorted(differing):
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
