"""An image's root filesystem as one flat tar (`-o type=tar`), as `docker export` gives a
container's: the layers applied in order, deletions resolved, no whiteout entries left.

The layers are applied in memory, from their headers alone: no file is written to disk, so owners,
device nodes and xattrs come out as the image has them whoever runs this, and a hostile layer has
nowhere to write. Bodies are then copied from the (uncompressed) layer tars at the offsets their
headers were read at. Paths are resolved as `layers/unpack.py` resolves them on disk: names
cleaned, a `..` that climbs out refused, a symlink in a parent followed inside the root only.
"""
from __future__ import annotations

import io
import posixpath
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from layers.errors import LayerError
from layers.tarreader import TarEntry, TarReader
from layers.tarwriter import OPAQUE_MARKER, WHITEOUT_PREFIX, Entry, Kind, LayerWriter
from layers.unpack import clean_name

_MAX_SYMLINKS = 40
_KINDS = frozenset((b"0", b"1", b"2", b"3", b"4", b"5", b"6"))
_IMPLICIT_DIR = TarEntry("", b"5", 0o755, 0, 0, 0, 0, "", 0, 0, ())


@dataclass(eq=False)
class _Body:
    """A regular file's inode: where its content lies (a layer tar and an offset in it) and its
    attributes. Hardlinks share their target's _Body, which is how the members of a link group
    are recognised; a link's header sets the attributes of them all, as on disk."""

    blob: str
    offset: int
    entry: TarEntry


@dataclass
class _Node:
    entry: TarEntry
    layer: int
    body: _Body | None = None


class _Tree:
    """The merged tree: clean path -> node, and each directory's children."""

    def __init__(self) -> None:
        self.nodes: dict[str, _Node] = {"": _Node(_IMPLICIT_DIR, -1)}
        self.children: dict[str, set[str]] = {"": set()}

    def apply(self, blob: str, layer: int) -> None:
        with open(blob, "rb") as stream:
            reader = TarReader(stream)
            for member in reader:
                self._apply(member, blob, layer, reader.position)

    def _apply(self, member: TarEntry, blob: str, layer: int, offset: int) -> None:
        if member.kind not in _KINDS:
            return  # what apply_layer skips too: no file of the image
        name = clean_name(member.name, member.name)
        if not name:
            return  # the root's own attributes are not the image's (as apply_layer)
        head, _, base = name.rpartition("/")
        parent = self._directory(head, member.name)
        if base == OPAQUE_MARKER:
            for child in list(self.children[parent]):
                self._remove(posixpath.join(parent, child), below=layer)
            return
        if base.startswith(WHITEOUT_PREFIX):
            self._remove(posixpath.join(parent, base[len(WHITEOUT_PREFIX):]), below=layer)
            return
        path = posixpath.join(parent, base)
        old = self.nodes.get(path)
        if old is not None and not (old.entry.kind == b"5" and member.kind == b"5"):
            self._remove(path)
        node = _Node(member, layer)
        if member.kind == b"0":
            node.body = _Body(blob, offset, member)
        elif member.kind == b"1":
            where, _, what = clean_name(member.linkname, member.name).rpartition("/")
            target = self.nodes.get(posixpath.join(self._resolve(where, member.name), what))
            if target is None or target.body is None:
                raise LayerError(f"{member.name}: hardlink to {member.linkname!r}, which is not a "
                                 "regular file of the image")
            target.body.entry = TarEntry(
                member.name, b"0", member.mode, member.uid, member.gid, target.body.entry.size,
                member.mtime_ns, "", 0, 0, member.xattrs)
            node = _Node(target.body.entry, layer, target.body)
        self.nodes[path] = node
        self.children[parent].add(base)
        if member.kind == b"5":
            self.children.setdefault(path, set())

    def _remove(self, path: str, below: int | None = None) -> None:
        """Remove `path` and what is under it; with `below`, only what layers under that one
        made (a whiteout or opaque marker hides lower content, never its own layer's). A loop,
        not recursion: a hostile layer may nest deeper than Python recurses."""
        stack = [(path, below)]
        while stack:
            here, limit = stack.pop()
            node = self.nodes.get(here)
            if node is None:
                continue
            kept = limit is not None and node.layer >= limit
            stack.extend((posixpath.join(here, child), limit if kept else None)
                         for child in self.children.get(here, ()))
            if kept:
                continue
            del self.nodes[here]
            self.children.pop(here, None)
            head, _, base = here.rpartition("/")
            if head in self.children:
                self.children[head].discard(base)

    def _directory(self, rel: str, entry: str) -> str:
        """The resolved path of directory `rel`, made (as a 0755 root directory, as tar and
        apply_layer do) where missing."""
        path = self._resolve(rel, entry)
        missing: list[str] = []
        here = path
        while here not in self.nodes:
            missing.append(here)
            here = posixpath.dirname(here)
        if self.nodes[here].entry.kind != b"5":
            raise LayerError(f"{entry}: {here!r} is not a directory")
        for made in reversed(missing):
            self.nodes[made] = _Node(_IMPLICIT_DIR, -1)
            self.children[made] = set()
            self.children[posixpath.dirname(made)].add(posixpath.basename(made))
        return path

    def _resolve(self, rel: str, entry: str) -> str:
        """`rel` with every symlink among its components followed, inside the root (the last
        component too: callers resolve parents, and link targets, which must be followed)."""
        done: list[str] = []
        todo = [part for part in rel.split("/") if part][::-1]
        links = _MAX_SYMLINKS
        while todo:
            part = todo.pop()
            if part == ".":
                continue
            if part == "..":
                if done:
                    done.pop()
                continue
            node = self.nodes.get("/".join(done + [part]))
            if node is None or node.entry.kind != b"2":
                done.append(part)
                continue
            links -= 1
            if links < 0:
                raise LayerError(f"{entry}: too many levels of symbolic links")
            target = node.entry.linkname
            if target.startswith("/"):
                done = []
            todo.extend(part for part in target.split("/")[::-1] if part)
        return "/".join(done)

    def walk(self) -> list[str]:
        """Every path but the root, parents before children, names sorted."""
        out: list[str] = []
        stack = [""]
        while stack:
            here = stack.pop()
            if here:
                out.append(here)
            stack.extend(posixpath.join(here, name)
                         for name in sorted(self.children.get(here, ()), reverse=True))
        return out


def write_flat_tar(out: BinaryIO, layers: Sequence[str], mtime: int | None = None) -> None:
    """Write the root filesystem the layer tars at `layers` (lowest first, uncompressed) make.
    `mtime`, if given (SOURCE_DATE_EPOCH), is every entry's mtime, as BuildKit's tar exporter
    sets it."""
    tree = _Tree()
    for layer, blob in enumerate(layers):
        tree.apply(blob, layer)
    writer = LayerWriter(out)
    first_of: dict[_Body, str] = {}
    for path in tree.walk():
        node = tree.nodes[path]
        entry = _entry(path, node.body.entry if node.body else node.entry, mtime)
        if node.body is None:
            writer.add(entry)
        elif node.body in first_of:
            writer.add(Entry(path, Kind.HARDLINK, entry.mode, entry.uid, entry.gid, entry.mtime,
                             linkname=first_of[node.body], xattrs=entry.xattrs))
        else:
            first_of[node.body] = path
            with open(node.body.blob, "rb") as blob:
                blob.seek(node.body.offset)
                writer.add(entry, _Slice(blob, entry.size))
    writer.finish()


@dataclass(frozen=True)
class FileRegion:
    """A regular file of a merged root, where its bytes lie in a layer tar: read a part of it
    (an ELF's section headers) without reading the rest."""

    path: str
    mode: int
    size: int
    blob: str
    offset: int

    def read(self, at: int, count: int) -> bytes:
        """Up to `count` bytes from `at`, fewer at the file's end."""
        count = max(0, min(count, self.size - at))
        if at < 0 or not count:
            return b""
        with open(self.blob, "rb") as blob:
            blob.seek(self.offset + at)
            return blob.read(count)


def file_regions(layers: Sequence[str],
                 wanted: Callable[[str, int, int], bool]) -> Iterator[FileRegion]:
    """The regular files of the root the layer tars at `layers` make whose path (relative, no
    leading slash, symlinks in parents resolved), mode and size `wanted` accepts, in path
    order: what the SBOM reads from the image."""
    tree = _Tree()
    for layer, blob in enumerate(layers):
        tree.apply(blob, layer)
    for path in sorted(tree.nodes):
        body = tree.nodes[path].body
        if body is not None and wanted(path, body.entry.mode, body.entry.size):
            yield FileRegion(path, body.entry.mode, body.entry.size, body.blob, body.offset)


def _entry(path: str, member: TarEntry, mtime: int | None) -> Entry:
    kind = Kind(member.kind)
    mode = 0o777 if kind is Kind.SYMLINK else member.mode & 0o7777  # a symlink's, on disk
    return Entry(path, kind, mode, member.uid, member.gid,
                 member.mtime_ns // 1_000_000_000 if mtime is None else mtime,
                 member.size if kind is Kind.FILE else 0, member.linkname if kind is Kind.SYMLINK
                 else "", member.devmajor, member.devminor, member.xattrs)


class _Slice(io.RawIOBase):
    """The next `size` bytes of a file, and then its end."""

    def __init__(self, stream: BinaryIO, size: int) -> None:
        self.stream, self.left = stream, size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        view = memoryview(buffer)[:self.left]
        n = self.stream.readinto(view) if len(view) else 0
        self.left -= n
        return n
