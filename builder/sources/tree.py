"""Where COPY and ADD read from: the build context or another stage's filesystem.

Both are trees answering `find(rel)`, `listdir(rel)` and `walk(rel)`; this module adds what COPY
needs on top: paths resolved inside the tree (symlinks followed without ever leaving it) and
Go-style globs.
"""
from __future__ import annotations

import os
import posixpath
import re
import stat
from typing import Iterator, NamedTuple, Protocol

from builder.sources import context
from builder.sources.dockerignore import IgnoreMatcher
from layers.errors import LayerError
from layers.union import UnionView

_GLOB = re.compile(r"[*?\[\\]")
_MAX_LINKS = 40


class Tree(Protocol):
    confined: bool  # sources may not leave it (a context directory), and are owned by root
    label: str  # how messages name it: "the build context", "the stage", "the image alpine"

    def find(self, rel: str) -> tuple[str, os.stat_result] | None: ...

    def listdir(self, rel: str) -> list[str]: ...

    def hidden(self, rel: str) -> bool: ...

    def walk(self, rel: str) -> Iterator[Found]:
        """Everything below directory `rel`, parents before children, never following symlinks.
        A hidden directory (excluded, kept for re-included files) appears only when something
        inside it does."""


class Found(NamedTuple):
    """A resolved source: its path in the tree, its host path and lstat. (A named tuple: a
    context walk makes one per file, and a tuple is made in half the time of a dataclass.)"""

    rel: str
    host: str
    st: os.stat_result


class OutsideTree(Exception):
    """A symlink leads out of a tree that must not be left (the build context)."""


class ContextTree:
    """The build context directory, minus what .dockerignore excludes. Symlinks are not followed
    here; `resolve` follows them inside the context."""

    confined = True

    def __init__(self, root: str, matcher: IgnoreMatcher, label: str = "the build context") -> None:
        self.root = root
        self.matcher = matcher
        self.label = label  # how messages name it
        self._walks: dict[str, tuple[Found, ...]] = {}

    def find(self, rel: str) -> tuple[str, os.stat_result] | None:
        """The entry at `rel`, unless excluded; an excluded directory that may hold re-included
        files is found too (see `hidden`)."""
        host = os.path.join(self.root, rel) if rel else self.root
        try:
            st = os.lstat(host)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if self.hidden(rel) and not (stat.S_ISDIR(st.st_mode) and not self.matcher.may_skip_dir(rel)):
            return None
        return host, st

    def listdir(self, rel: str) -> list[str]:
        host = os.path.join(self.root, rel) if rel else self.root
        return [name for name in sorted(os.listdir(host))
                if self.find(f"{rel}/{name}" if rel else name) is not None]

    def hidden(self, rel: str) -> bool:
        """Excluded: present only as the parent of files an exception re-includes."""
        return bool(rel) and self.matcher.excluded(rel)

    def walk(self, rel: str) -> Iterator[Found]:
        """See `Tree.walk`. The context walk threads the .dockerignore verdicts down the tree
        instead of matching each path from the root, and lstats each entry once: a COPY of a
        large context spends its time here. A walk is remembered for the build (the context does
        not change under it), so the cache key and the layer of a COPY share one walk."""
        if rel not in self._walks:
            self._walks[rel] = tuple(context.entries(self.root, self.matcher, rel, Found))
        return iter(self._walks[rel])


class StageTree:
    """Another stage's (or image's) filesystem: a union of its snapshots, nothing excluded."""

    confined = False

    def __init__(self, view: UnionView, label: str = "the stage") -> None:
        self.view = view
        self.label = label

    def find(self, rel: str) -> tuple[str, os.stat_result] | None:
        return self.view.find(rel)

    def listdir(self, rel: str) -> list[str]:
        return self.view.listdir(rel)

    def hidden(self, rel: str) -> bool:
        return False

    def walk(self, rel: str) -> Iterator[Found]:
        return _walk(self, rel)


def has_glob(pattern: str) -> bool:
    return bool(_GLOB.search(pattern))


def resolve(tree: Tree, rel: str, *, confined: bool, follow_last: bool = True) -> Found | None:
    """Find `rel`, following symlinks in its parents (and in its last component when
    `follow_last`) inside the tree: absolute targets are taken from the tree's root. When
    `confined`, a symlink whose target climbs above the root raises OutsideTree."""
    parts = [p for p in rel.split("/") if p]
    done: list[str] = []
    hops = 0
    while parts:
        name = parts.pop(0)
        current = "/".join(done + [name])
        found = tree.find(current)
        if found is None:
            return None
        host, st = found
        if stat.S_ISLNK(st.st_mode) and (parts or follow_last):
            hops += 1
            if hops > _MAX_LINKS:
                return None
            target = os.readlink(host)
            base = "/" if target.startswith("/") else "/" + "/".join(done)
            joined = posixpath.normpath(posixpath.join(base, target))
            if confined and _climbs(base, target):
                raise OutsideTree(f"{current} -> {target}")
            parts = [p for p in joined.split("/") if p] + parts
            done = []
            continue
        done.append(name)
    rel = "/".join(done)
    found = tree.find(rel)
    return Found(rel, *found) if found else None


def landing(tree: Tree, rel: str) -> str:
    """Where a write to `rel` lands, as Docker resolves a COPY destination or a WORKDIR: every
    symlink on the way followed (the last one too), absolute targets taken from the tree's root
    and `..` stopping there; what does not exist is kept as named, so a link to a missing
    directory leads to where that directory will be created."""
    parts = [p for p in rel.split("/") if p]
    done: list[str] = []
    hops = 0
    while parts:
        name = parts.pop(0)
        found = tree.find("/".join(done + [name]))
        if found is None or not stat.S_ISLNK(found[1].st_mode):
            done.append(name)
            continue
        hops += 1
        if hops > _MAX_LINKS:
            raise LayerError(f"/{rel.lstrip('/')}: too many levels of symbolic links")
        target = os.readlink(found[0])
        base = "/" if target.startswith("/") else "/" + "/".join(done)
        parts = [p for p in posixpath.normpath(posixpath.join(base, target)).split("/") if p] + parts
        done = []
    return "/".join(done)


def _climbs(base: str, target: str) -> bool:
    """Whether following `target` from directory `base` goes above the root at any point."""
    depth = 0 if target.startswith("/") else len([p for p in base.split("/") if p])
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part and part != ".":
            depth += 1
    return False


def glob(tree: Tree, pattern: str) -> list[Found]:
    """Entries matching a Go filepath.Match pattern, component by component, sorted. A symlink
    to a directory on the way is followed inside the tree, as BuildKit does (one out of a
    confined tree raises OutsideTree): the matches are named by where it leads."""
    parts = [p for p in pattern.split("/") if p]
    matches = [""]
    for i, part in enumerate(parts):
        regex = re.compile(go_match_regex(part)) if has_glob(part) else None
        following: list[str] = []
        for base in matches:
            if regex is None:
                candidates = [part]
            else:
                found = tree.find(base)
                if found is None or not stat.S_ISDIR(found[1].st_mode):
                    continue
                candidates = [n for n in tree.listdir(base) if regex.fullmatch(n)]
            for name in candidates:
                child = f"{base}/{name}" if base else name
                if i == len(parts) - 1:
                    following.append(child)
                    continue
                directory = resolve(tree, child, confined=tree.confined)
                if directory is not None and stat.S_ISDIR(directory.st.st_mode):
                    following.append(directory.rel)
        matches = following
    result = []
    for rel in sorted(matches):
        found = tree.find(rel)
        if found is not None:
            result.append(Found(rel, *found))
    return result


def go_match_regex(pattern: str) -> str:
    """Go's filepath.Match for one path component: `*`, `?`, `[...]` with `^` negation (not `!`),
    and `\\` escapes."""
    out = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        elif ch == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1:i + 2] == "^" else i + 1)
            if end == -1:
                out.append(re.escape(ch))
            else:
                body = pattern[i + 1:end]
                negate = body.startswith("^")
                body = body[1:] if negate else body
                escaped = body.replace("\\", "\\\\").replace("[", "\\[")
                out.append(f"[{'^' if negate else ''}{escaped}]")
                i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return "".join(out)


def _walk(tree: Tree, rel: str) -> Iterator[Found]:
    """`Tree.walk` from `find`, `listdir` and `hidden` alone."""
    for name in tree.listdir(rel):
        child = f"{rel}/{name}" if rel else name
        found = tree.find(child)
        if found is None:
            continue
        entry = Found(child, *found)
        hidden = tree.hidden(child)
        if stat.S_ISDIR(entry.st.st_mode):
            below = list(_walk(tree, child))
            if below or not hidden:
                yield entry
                yield from below
        elif not hidden:
            yield entry
