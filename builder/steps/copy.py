"""COPY and ADD: selected sources -> the entries of one new layer.

The layer is written straight from the sources (context files are read once, while the tar is
hashed); nothing is staged in an intermediate directory. Docker's destination rules apply: a
directory source copies its contents, a file goes into a destination ending in `/` (or that is a
directory in the image) under its own name, missing parents are created, and every parent the layer
touches is written with the metadata it already has in the image. Symlinks on the way to the
destination are followed inside the image, as Docker does: the layer writes where they lead.
"""
from __future__ import annotations

import functools
import hashlib
import os
import posixpath
import stat
import tarfile
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Iterable, Union

from builder.sources.dockerignore import IgnoreMatcher
from builder.sources.tree import Found, StageTree, Tree, landing
from builder.steps.users import Owner
from layers.byteorder import tar_sorted
from layers.errors import LayerError
from layers.tarwriter import WHITEOUT_PREFIX, Entry, Kind, LayerWriter, entry_from_stat, read_xattrs
from layers.union import UnionView

if TYPE_CHECKING:  # the downloader is loaded only by a build that downloads
    from builder.sources.download import Downloaded

Body = Union[str, bytes, Callable[[], object], None]


@dataclass(frozen=True)
class CopySpec:
    """How sources land: where, as whom, with which mode."""

    dest: str
    dest_is_dir: bool
    owner: Owner | None
    chmod: int | None
    keep_owner: bool
    now: int


@dataclass(frozen=True)
class TreeSource:
    """A resolved path of the context or of another stage. `name` is the path as the source
    named it when that was a symlink, followed to `found`: a file copied into a directory is
    named after the link, as in Docker, not after its target. `landing` is, for COPY
    --parents, the path it gets below the destination (its parents after the `./` pivot);
    `excludes` what --exclude leaves out below a directory source."""

    tree: Tree
    found: Found
    name: str = ""
    landing: str | None = None
    excludes: IgnoreMatcher | None = None

    def walk(self) -> Iterable[Found]:
        """Everything below a directory source, parents before children, minus what --exclude
        leaves out (matched against the path below the destination, as .dockerignore patterns
        are; a directory left out stays as the parent of what an exception re-includes)."""
        entries = self.tree.walk(self.found.rel)
        if self.excludes is None:
            return entries
        prefix = len(self.found.rel) + 1 if self.found.rel else 0
        listed = list(entries)
        kept = {found.rel for found in listed
                if not self.excludes.excluded(_join(self.landing or "", found.rel[prefix:]))}
        for rel in list(kept):
            parent = rel.rpartition("/")[0]
            while len(parent) >= prefix and parent not in kept:
                kept.add(parent)
                parent = parent.rpartition("/")[0]
        return [found for found in listed if found.rel in kept]


@dataclass(frozen=True)
class DataSource:
    """A file made from text: a COPY heredoc."""

    name: str
    data: bytes


@dataclass(frozen=True)
class TarSource:
    """A local tar archive that ADD extracts; the caller keeps it open until the layer is written."""

    archive: tarfile.TarFile


@dataclass(frozen=True)
class UrlSource:
    """ADD <url>: a file fetched only when the cache key or the layer needs it (with
    --checksum, the key needs only the checksum). Never extracted; 0600 unless --chmod, its
    mtime the server's Last-Modified, as in Docker."""

    url: str
    name: str  # its name in a directory destination
    checksum: str | None  # sha256:<hex>, verified
    fetch: Callable[[], Downloaded]

    def digest(self) -> str:
        """What the cache key holds: the checksum given, else the content's digest."""
        return self.checksum or self.fetch().digest

    def file(self) -> Downloaded:
        """The download, checked against --checksum."""
        downloaded = self.fetch()
        if self.checksum and downloaded.digest != self.checksum:
            raise LayerError(f"{self.url}: checksum mismatch: --checksum={self.checksum}, the "
                             f"download is {downloaded.digest}")
        return downloaded


@dataclass(frozen=True)
class GitSource:
    """ADD <git URL>: the tree of a commit, copied like a directory of the context (owned by
    root unless --chown). The cache key needs only the resolved commit; the tree is fetched
    when the layer is written."""

    url: str
    key: Callable[[], str]  # the commit, subdir and --keep-git-dir, resolved
    tree: Callable[[], TreeSource]  # the checked-out directory


Source = Union[TreeSource, DataSource, TarSource, UrlSource, GitSource]
_ROOT = Owner(0, 0)
_UNCOPIED = {stat.S_IFIFO: "named pipe (FIFO)", stat.S_IFSOCK: "socket"}


def plan_layer(sources: list[Source], spec: CopySpec, image: UnionView) -> dict[str, tuple[Entry, Body]]:
    """The entries of the layer, keyed by path (no leading `/`); later sources win."""
    out: dict[str, tuple[Entry, Body]] = {}
    inodes: dict[str, object] = {}
    dest = landing(StageTree(image), spec.dest)
    into_dir = spec.dest_is_dir or _is_dir(image, dest)
    for number, source in enumerate(sources):
        if isinstance(source, GitSource):
            source = source.tree()
        if isinstance(source, TreeSource) and source.landing is not None:
            _add_landing_parents(out, source, dest, spec)
        if isinstance(source, TreeSource) and stat.S_ISDIR(source.found.st.st_mode):
            prefix = len(source.found.rel) + 1 if source.found.rel else 0
            top = _join(dest, source.landing or "")
            below = list(source.walk())
            itself = _tree_entry(top, source.found, spec)
            excludes = source.excludes
            left_out = excludes is not None and excludes.excluded(source.landing or "")
            if source.landing and itself is not None and (below or not left_out):
                out[top] = itself
            for found in below:
                rel = _join(top, found.rel[prefix:])
                planned = _tree_entry(rel, found, spec)
                if planned is not None:
                    out[rel] = planned
                    _remember_inode(inodes, rel, number, found.st)
        elif isinstance(source, TreeSource):
            named = source.name or source.found.rel
            if source.landing is not None:
                rel = _join(dest, source.landing)
            else:
                rel = _join(dest, posixpath.basename(named)) if into_dir else dest
            planned = _tree_entry(rel, source.found, spec)
            if planned is None and not source.tree.confined:
                continue  # a stage's FIFO or socket named alone: nothing, as BuildKit (case 166)
            if planned is None:
                raise LayerError(f"{named}: a {_UNCOPIED[stat.S_IFMT(source.found.st.st_mode)]} "
                                 "cannot be copied (only files, directories and symlinks; one "
                                 "inside a copied directory is left out)")
            out[rel] = planned
            _remember_inode(inodes, rel, number, source.found.st)
        elif isinstance(source, UrlSource):
            rel = _join(dest, source.name) if into_dir else dest
            owner = spec.owner or _ROOT
            file = source.file()
            mode = spec.chmod if spec.chmod is not None else 0o600
            out[rel] = (Entry(rel, Kind.FILE, mode, owner.uid, owner.gid, file.mtime, file.size),
                        file.path)
            inodes.pop(rel, None)
        elif isinstance(source, DataSource):
            rel = _join(dest, source.name) if into_dir else dest
            owner = spec.owner or _ROOT
            mode = spec.chmod if spec.chmod is not None else 0o644
            out[rel] = (Entry(rel, Kind.FILE, mode, owner.uid, owner.gid, spec.now,
                              len(source.data)), source.data)
            inodes.pop(rel, None)
        else:
            entries, groups = _archive_entries(source.archive, dest)
            out.update(entries)
            inodes.update(groups)
    _link_hardlinks(out, inodes)
    _add_parents(out, dest if (into_dir or _has_dir_source(sources)) else posixpath.dirname(dest),
                 spec, image)
    return out


def write_layer(entries: dict[str, tuple[Entry, Body]], writer: LayerWriter,
                hash_files: frozenset[str] = frozenset()) -> dict[str, "hashlib._Hash"]:
    """Entries in tar order: sorted by path components, so parents come before children. The
    host files named in `hash_files` are hashed while written; returns their sha256 objects,
    complete once the writer is finished."""
    hashes: dict[str, hashlib._Hash] = {}
    for path in tar_sorted(entries):
        entry, body = entries[path]
        if isinstance(body, str) and body in hash_files:
            hashes[body] = hashlib.sha256()
            writer.add(entry, body, hashes[body])
        else:
            writer.add(entry, body() if callable(body) else body)  # type: ignore[arg-type]
    return hashes


def _join(base: str, rel: str) -> str:
    return f"{base}/{rel}" if base and rel else base or rel


def _is_dir(image: UnionView, rel: str) -> bool:
    found = image.find(rel)
    return found is not None and stat.S_ISDIR(found[1].st_mode)


def _has_dir_source(sources: list[Source]) -> bool:
    return any(isinstance(s, (TarSource, GitSource))
               or (isinstance(s, TreeSource) and stat.S_ISDIR(s.found.st.st_mode))
               for s in sources)


def _tree_entry(rel: str, found: Found, spec: CopySpec) -> tuple[Entry, Body] | None:
    """The entry for a source path. COPY copies file contents, so (as in BuildKit) a fifo or
    socket is left out and a device node becomes an empty 0644 file."""
    st = found.st
    owner = spec.owner or (Owner(st.st_uid, st.st_gid) if spec.keep_owner else _ROOT)
    if stat.S_ISFIFO(st.st_mode) or stat.S_ISSOCK(st.st_mode):
        return None
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        mode = 0o644 if spec.chmod is None else spec.chmod
        return Entry(rel, Kind.FILE, mode, owner.uid, owner.gid, st.st_mtime_ns // 1_000_000_000), b""
    if stat.S_ISLNK(st.st_mode):
        return entry_from_stat(rel, st, linkname=os.readlink(found.host), uid=owner.uid,
                               gid=owner.gid), None
    regular = stat.S_ISREG(st.st_mode)
    mode = spec.chmod if regular or stat.S_ISDIR(st.st_mode) else None
    entry = entry_from_stat(rel, st, xattrs=read_xattrs(found.host), uid=owner.uid, gid=owner.gid,
                            mode=mode)
    return entry, found.host if regular else None


def _remember_inode(inodes: dict[str, object], rel: str, number: int, st: os.stat_result) -> None:
    """Note the inode a path was copied from, for `_link_hardlinks`; only files with other links
    can share one, so the common file costs nothing there."""
    if st.st_nlink > 1 and stat.S_ISREG(st.st_mode):
        inodes[rel] = (number, st.st_dev, st.st_ino)
    else:
        inodes.pop(rel, None)


def _link_hardlinks(out: dict[str, tuple[Entry, Body]], inodes: dict[str, object]) -> None:
    """Files of one inode copied from one source stay hardlinks (separate sources give separate
    files, as in Docker): the first path in tar order
    carries the content, the others link to it with the same header (Docker applies a link
    entry's header to the shared inode)."""
    first: dict[object, str] = {}
    for path in tar_sorted(inodes):
        entry, body = out[path]
        if entry.kind is not Kind.FILE:
            continue
        key = inodes[path]
        if key in first:
            out[path] = (replace(entry, kind=Kind.HARDLINK, linkname=first[key], size=0), None)
        else:
            first[key] = path


def _add_landing_parents(out: dict[str, tuple[Entry, Body]], source: TreeSource, dest: str,
                         spec: CopySpec) -> None:
    """COPY --parents: the directories between the pivot and a source are copied from the
    source's tree (metadata, --chown, --chmod as for any copied directory), as BuildKit copies
    them on the way to what its include pattern matches."""
    named = source.name or source.found.rel
    base = named[:len(named) - len(source.landing or "")].rstrip("/")
    parts = (source.landing or "").split("/")[:-1]
    for depth in range(1, len(parts) + 1):
        below = "/".join(parts[:depth])
        rel = _join(dest, below)
        if rel in out:
            continue
        found = source.tree.find(_join(base, below))
        if found is not None:
            planned = _tree_entry(rel, Found(_join(base, below), *found), spec)
            if planned is not None:
                out[rel] = planned


def _add_parents(out: dict[str, tuple[Entry, Body]], top: str, spec: CopySpec,
                 image: UnionView) -> None:
    """Every ancestor of what the layer writes, and the destination directory itself, gets an
    entry: as it is in the image when it exists there, else created (0755, the --chown owner)."""
    needed: set[str] = set()
    for path in list(out) + ([top] if top else []):
        parent = path if path == top else path.rpartition("/")[0]
        while parent and parent not in needed:
            needed.add(parent)
            parent = parent.rpartition("/")[0]
    owner = spec.owner or _ROOT
    for path in needed:
        if path in out:
            continue
        found = image.find(path)
        if found is not None and stat.S_ISDIR(found[1].st_mode):
            out[path] = (entry_from_stat(path, found[1], xattrs=read_xattrs(found[0])), None)
        else:
            out[path] = (Entry(path, Kind.DIR, 0o755, owner.uid, owner.gid, spec.now), None)


_TAR_KINDS = {tarfile.REGTYPE: Kind.FILE, tarfile.AREGTYPE: Kind.FILE, tarfile.CONTTYPE: Kind.FILE,
              tarfile.DIRTYPE: Kind.DIR, tarfile.SYMTYPE: Kind.SYMLINK, tarfile.LNKTYPE: Kind.HARDLINK,
              tarfile.CHRTYPE: Kind.CHAR, tarfile.BLKTYPE: Kind.BLOCK, tarfile.FIFOTYPE: Kind.FIFO}


def _archive_entries(archive: tarfile.TarFile, dest: str
                     ) -> tuple[dict[str, tuple[Entry, Body]], dict[str, object]]:
    """An archive's entries under `dest`, owners and modes as the archive says, and the hardlink
    groups among them. A name that would climb out of the destination is refused: an archive must
    not write outside where ADD puts it."""
    entries: dict[str, tuple[Entry, Body]] = {}
    groups: dict[str, object] = {}
    for member in archive.getmembers():
        name = _archive_path(member.name)
        kind = _TAR_KINDS.get(member.type)
        if not name or kind is None:
            continue
        if any(part.startswith(WHITEOUT_PREFIX) for part in name.split("/")):
            raise LayerError(f"archive entry {member.name!r}: names starting with "
                             f"{WHITEOUT_PREFIX!r} are whiteouts in an image layer, which no "
                             "file can be named (an AUFS-style archive?)")
        rel = _join(dest, name)
        linkname = member.linkname
        if kind is Kind.HARDLINK:
            target = _join(dest, _archive_path(member.linkname))
            if target not in entries or entries[target][0].kind is not Kind.FILE:
                raise LayerError(f"{member.name}: hardlink to {member.linkname!r}, which is not "
                                 "an earlier file of the archive")
            groups[rel] = groups.setdefault(target, ("archive", target))
            entries[rel] = (replace(entries[target][0], path=rel), entries[target][1])
            continue
        if kind is Kind.CHAR and member.devmajor == member.devminor == 0:
            raise LayerError(f"{member.name}: a character device 0:0, which overlay filesystems "
                             "(and so Docker's) take for a deletion marker: an image cannot hold "
                             "one")
        xattrs = tuple(sorted((k[len("SCHILY.xattr."):], v.encode("utf-8", "surrogateescape"))
                              for k, v in member.pax_headers.items()
                              if k == "SCHILY.xattr.security.capability"))
        entry = Entry(rel, kind, member.mode & 0o7777, member.uid, member.gid, int(member.mtime),
                      member.size if kind is Kind.FILE else 0, linkname if kind is Kind.SYMLINK else "",
                      member.devmajor, member.devminor, xattrs)
        body: Body = None
        if kind is Kind.FILE:
            body = functools.partial(archive.extractfile, member)
        entries[rel] = (entry, body)
    return entries, groups


def _archive_path(name: str) -> str:
    clean = posixpath.normpath("/" + name).lstrip("/")
    if clean in ("", "."):
        return ""
    if any(part == ".." for part in posixpath.normpath(name.lstrip("/")).split("/")):
        raise LayerError(f"archive entry {name!r} climbs out of the destination")
    return clean
