"""Instructions that make a layer without running anything: COPY, ADD and WORKDIR."""
from __future__ import annotations

import contextlib
import json
import os
import posixpath
import re
import stat
import tarfile
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from builder.steps.copy import (TarSource, CopySpec, DataSource, GitSource, Source, TreeSource,
                                UrlSource, plan_layer, write_layer)
from builder.sources.dockerignore import IgnoreMatcher, parse_dockerignore
from builder.sources.tree import (ContextTree, Found, OutsideTree, StageTree, Tree, glob,
                                  has_glob, landing, resolve)
from builder.plan.state import StageState
from builder.steps.users import Owner, UnknownUser, resolve_owner
from grammar import instructions as ins
from grammar.errors import DockerfileError
from layers.archive_files import decompressed
from layers.errors import LayerError
from layers.union import UnionView

if TYPE_CHECKING:  # the downloader is loaded only by a build that downloads
    from builder.sources.download import Downloaded, Downloads
    from builder.sources.gitrepo import GitSources, Resolved

_URL = re.compile(r"^https?://", re.IGNORECASE)
# What BuildKit takes for a git repository (ext:: and file:// ones only to refuse them clearly)
_GIT = re.compile(r"^(git@|git://|ssh://|ext::)|^(https?|file)://[^#?]*\.git([#?/]|$)",
                  re.IGNORECASE)
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
_CHECKSUM = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class StepEnv:
    """What a layer step needs from the build: the trees to read and how to store a layer."""

    context: Tree
    image_view: Callable[[StageState], UnionView]
    from_tree: Callable[[], Tree | None]  # what COPY --from names: a stage, an image or a dir
    commit_layer: Callable[[Callable], str]
    now: int
    temp_dir: Callable[[], str]  # made on first use
    downloads: Callable[[], Downloads]  # ADD's URL fetcher, made on first use
    git: Callable[[], GitSources]  # ADD's git checkouts, made on first use


@dataclass(frozen=True)
class CopySelection:
    """What a COPY or ADD will read, resolved but not yet read: the cache key is computed from
    it (see builder/cache/sources.py) before deciding whether to write the layer at all."""

    sources: tuple[TreeSource | DataSource | UrlSource | GitSource, ...]
    spec: CopySpec
    from_stage: str | None  # the name COPY --from gave (a stage, an image or a build context)
    extract: bool


def select_copy(state: StageState, instruction: ins.Copy, env: StepEnv) -> CopySelection:
    """Resolve a COPY or ADD: sources (globs, symlinks followed inside their tree), destination,
    owner and mode. `from_stage` is the name COPY --from gives: a stage's AS name or index, an
    image, or a build context. A tree that is a directory (the context, or a directory build
    context) confines its sources and gives them to root; a stage's or an image's files keep
    their owners."""
    is_add = isinstance(instruction, ins.Add)
    tree, from_stage = env.context, None
    if not is_add and instruction.from_:
        from_stage = state.expand(instruction.from_)
        from_tree = env.from_tree()
        if from_tree is None:
            raise DockerfileError(f"COPY --from={from_stage}: no stage, image or build context "
                                  "of that name")
        tree = from_tree
    owner = _owner(state, instruction.chown, lambda: env.image_view(state))
    chmod = _chmod(state.expand(instruction.chmod) if instruction.chmod is not None else None)
    dest = state.expand(instruction.dest)
    workdir = state.image.config.working_dir or "/"
    absolute = posixpath.normpath(posixpath.join(workdir, dest))
    dest_is_dir = dest.endswith("/") or dest in (".", "..") or dest.endswith("/.")
    heredocs = {h.name: h for h in instruction.heredocs}
    excludes = _excludes(state, instruction)
    checksum = state.expand(instruction.checksum) \
        if is_add and instruction.checksum is not None else None
    sources: list[TreeSource | DataSource | UrlSource | GitSource] = []
    for word in instruction.sources:
        heredoc = _heredoc_of(word, heredocs)
        if heredoc is not None:
            text = heredoc.text()
            data = state.expand(text) if heredoc.expand else text
            sources.append(DataSource(heredoc.name, data.encode()))
            continue
        source = state.expand(word)
        if is_add and _GIT.match(source):
            sources.append(_git_source(source, checksum, instruction.keep_git_dir, env))
            continue
        if _SCHEME.match(source) or source.startswith("git@"):
            sources.append(_url_source(source, is_add, _checksum(checksum), env))
            continue
        sources.extend(_select(tree, source, instruction.parents, excludes))
    if checksum and not (len(sources) == 1 and isinstance(sources[0], (UrlSource, GitSource))):
        raise DockerfileError("ADD --checksum needs exactly one source, an http(s) or git URL")
    if is_add and instruction.keep_git_dir and not any(isinstance(s, GitSource) for s in sources):
        raise DockerfileError("ADD --keep-git-dir needs a git URL source")
    dest_is_dir = dest_is_dir or instruction.parents  # --parents copies into a directory
    spec = CopySpec(dest=absolute, dest_is_dir=dest_is_dir, owner=owner, chmod=chmod,
                    keep_owner=not tree.confined, now=env.now)
    extract = is_add and instruction.unpack is not False  # ADD --unpack=false copies archives
    return CopySelection(tuple(sources), spec, from_stage, extract)


def linked_inputs(state: StageState, instruction: ins.Copy, env: StepEnv) -> str:
    """What a COPY --link or ADD --link takes from the steps before it, expanded: the working
    directory, the words, the owner --chown names (ids). Its cache key has these instead of
    the previous state's key, so a changed base does not change it."""
    owner = _owner(state, instruction.chown, lambda: env.image_view(state))
    words = [state.expand(word) for word in (*instruction.sources, instruction.dest,
                                              *instruction.excludes, instruction.from_ or "",
                                              instruction.chmod or "")]
    return json.dumps([state.image.config.working_dir or "/", words,
                       None if owner is None else [owner.uid, owner.gid]])


def write_copy(state: StageState, selection: CopySelection, env: StepEnv,
               hash_files: frozenset[str] = frozenset()) -> tuple[str | None, dict[str, str]]:
    """Write the layer of a selection: its diff ID (None when only wildcards that matched
    nothing were given: Docker then changes nothing) and the digests of the `hash_files` read on
    the way. ADD extracts local tar archives, judged by content."""
    if not selection.sources:
        return None, {}
    with contextlib.ExitStack() as stack:
        sources: list[Source] = []
        for source in selection.sources:
            archive = None
            if selection.extract and isinstance(source, TreeSource) \
                    and stat.S_ISREG(source.found.st.st_mode):
                archive = _open_archive(source.found.host, env.temp_dir(), stack)
            sources.append(TarSource(archive) if archive else source)
        entries = plan_layer(sources, selection.spec, env.image_view(state))
        hashes: dict = {}
        diff_id = env.commit_layer(lambda writer: hashes.update(write_layer(entries, writer, hash_files)))
        return diff_id, {path: content.hexdigest() for path, content in hashes.items()}


def workdir(state: StageState, instruction: ins.Workdir, env: StepEnv) -> tuple[StageState, str | None]:
    """Set the working directory and create it, owned by the current USER, in a layer of its own
    unless it already exists. A relative path is joined to the current one and cleaned; an
    absolute one is stored as written (BuildKit's quirk) and only the created path is cleaned.
    Symlinks on the way are followed inside the image, as for a COPY destination."""
    written = state.expand(instruction.path)
    if not written.startswith("/"):
        written = posixpath.normpath(posixpath.join("/", state.image.config.working_dir or "/", written))
    state = state.with_config(working_dir=written)
    image = env.image_view(state)
    path = "/" + landing(StageTree(image), posixpath.normpath(written))
    found = image.find(path.strip("/"))
    if path == "/" or (found is not None and stat.S_ISDIR(found[1].st_mode)):
        return state, None
    owner = _owner(state, state.image.config.user or None, lambda: image)
    spec = CopySpec(dest=path, dest_is_dir=True, owner=owner, chmod=None, keep_owner=False,
                    now=env.now)
    entries = plan_layer([], spec, image)
    return state, env.commit_layer(lambda writer: write_layer(entries, writer))


def _excludes(state: StageState, instruction: ins.Copy) -> IgnoreMatcher | None:
    """The --exclude patterns (expanded), in .dockerignore syntax; None without any."""
    if not instruction.excludes:
        return None
    patterns = [state.expand(pattern) for pattern in instruction.excludes]
    try:
        return IgnoreMatcher(parse_dockerignore("\n".join(patterns)))
    except ValueError as error:
        raise DockerfileError(f"{instruction.keyword} --exclude: {error}") from None


def _checksum(checksum: str | None) -> str | None:
    """An http(s) source's --checksum, checked for form."""
    if checksum is None:
        return None
    if not _CHECKSUM.fullmatch(checksum):
        raise DockerfileError(f"invalid --checksum={checksum}: sha256:<64 lower-case hex "
                              "digits> is expected")
    return checksum


def _url_source(source: str, is_add: bool, checksum: str | None, env: StepEnv) -> UrlSource:
    """ADD's http(s) URL; other schemes are refused clearly, and so is a URL in COPY (as
    BuildKit)."""
    if not is_add:
        raise DockerfileError(f"COPY {source}: COPY cannot read a URL (ADD downloads one)")
    if not _URL.match(source):
        raise DockerfileError(f"ADD {source}: only http:// and https:// URLs can be downloaded")
    from builder.sources.download import file_name
    return UrlSource(source, file_name(source), checksum, lambda: _fetch(env, source))


def _fetch(env: StepEnv, url: str) -> Downloaded:
    from builder.sources.download import DownloadError
    try:
        return env.downloads().fetch(url)
    except DownloadError as error:
        raise DockerfileError(f"ADD: {error}") from None


def _git_source(source: str, checksum: str | None, keep_git_dir: bool,
                env: StepEnv) -> GitSource:
    """ADD's git URL: the commit its ref names, copied into the destination directory. The
    --checksum is the full commit id, verified when the ref is resolved (before any fetch)."""
    from builder.sources.gitrepo import COMMIT, GitError, parse
    if checksum is not None and not COMMIT.fullmatch(checksum):
        raise DockerfileError(f"invalid --checksum={checksum}: a git source's checksum is "
                              "its full commit id (40 or 64 lower-case hex digits)")
    try:
        url = parse(source)
    except GitError as error:
        raise DockerfileError(f"ADD {error}") from None

    def resolved() -> Resolved:
        try:
            found = env.git().resolve(url)
        except GitError as error:
            raise DockerfileError(f"ADD {error}") from None
        if checksum and found.commit != checksum:
            raise DockerfileError(f"ADD {source}: checksum mismatch: --checksum={checksum}, "
                                  f"the ref is commit {found.commit}")
        return found

    def key() -> str:
        return f"{resolved().commit}:{url.subdir}:{'keep-git-dir' if keep_git_dir else ''}"

    def tree() -> TreeSource:
        try:
            root = env.git().checkout(resolved(), keep_git_dir)
        except GitError as error:
            raise DockerfileError(f"ADD {error}") from None
        checkout = ContextTree(root, IgnoreMatcher(), label=source)
        try:
            found = resolve(checkout, url.subdir, confined=True) if url.subdir else \
                Found("", root, os.lstat(root))
        except OutsideTree as error:
            raise DockerfileError(f"ADD {source}: the subdirectory is a symlink out of the "
                                  f"repository ({error})") from None
        if found is None or not stat.S_ISDIR(found.st.st_mode):
            raise DockerfileError(f"ADD {source}: no directory {url.subdir!r} in the repository")
        return TreeSource(checkout, found)

    return GitSource(source, key, tree)


def _heredoc_of(word: str, heredocs: dict[str, ins.Heredoc]) -> ins.Heredoc | None:
    match = re.fullmatch(r"\d*<<-?(.+)", word)
    if not match or not heredocs:
        return None
    return heredocs.get(match.group(1).strip("'\""))


def _owner(state: StageState, chown: str | None, image: Callable[[], UnionView]) -> Owner | None:
    """The owner `chown` names; the image's files are read (its layers perhaps fetched) only
    when a name must be looked up there."""
    if not chown:
        return None
    spec = state.expand(chown)
    try:
        return resolve_owner(spec, StageTree(image()))
    except UnknownUser as error:
        raise DockerfileError(str(error)) from None
    except ValueError:
        raise DockerfileError(f"invalid user {spec!r}") from None


def _chmod(text: str | None) -> int | None:
    """Octal modes (expanded first, as BuildKit does since v0.16); special bits are dropped as
    BuildKit does. Docker 20.10 silently ignored a mode it could not read; this is an error."""
    if text is None:
        return None
    if not re.fullmatch(r"[0-7]{1,4}", text):
        raise DockerfileError(f"invalid --chmod={text}: an octal mode like 755 is expected",
                              hint="symbolic modes (u+x) are not supported yet")
    return int(text, 8) & 0o777


def _select(tree: Tree, source: str, parents: bool = False,
            excludes: IgnoreMatcher | None = None) -> list[TreeSource]:
    """The entries a source names: a glob's matches (none is fine, as in Docker), or exactly one
    path. Symlinks are followed inside the tree, a glob's matches too (as BuildKit does), and a
    followed link keeps its own name. With --parents each keeps its path below the pivot (the
    first `/./`, else the root); --exclude leaves out a file or a match by that path (without
    --parents, by its name)."""
    confined = tree.confined
    if confined and (source.startswith("/") or posixpath.normpath(source).split("/")[0] == ".."):
        raise DockerfileError(f"source {source!r} is outside {tree.label}",
                              hint="sources are paths inside the context directory")
    rel = posixpath.normpath("/" + source).lstrip("/")
    pivot = posixpath.normpath("/" + source.partition("/./")[0]).lstrip("/") \
        if parents and "/./" in source else ""
    depth = len(pivot.split("/")) if pivot else 0  # a glob in it matches as many components
    selected = []
    try:
        for named in glob(tree, rel) if has_glob(rel) else (None,):
            path = rel if named is None else named.rel
            found = named if named is not None and not stat.S_ISLNK(named.st.st_mode) \
                else resolve(tree, path, confined=confined)
            if found is None:
                raise DockerfileError(f"{source!r}: not found in {tree.label}" if named is None
                                      else f"{path!r} (matched by {source!r}) is a symlink to "
                                           f"nothing in {tree.label}")
            landing = "/".join(path.split("/")[depth:]) if parents else None
            if excludes is not None and not stat.S_ISDIR(found.st.st_mode) and \
                    excludes.excluded(landing or posixpath.basename(path)):
                continue
            named = path if found.rel != path or parents else ""
            selected.append(TreeSource(tree, found, named, landing, excludes))
    except OutsideTree as error:
        raise DockerfileError(f"source {source!r} is a symlink out of {tree.label} "
                              f"({error})") from None
    return selected


def _open_archive(path: str, temp_dir: str, stack: contextlib.ExitStack) -> tarfile.TarFile | None:
    """ADD extracts a local file that is a tar archive (plain, gzip, bzip2, xz or zstd), judged by
    content, not by name; a file whose start does not decompress to a tar header is copied as it
    is, as Docker does. The archive is decompressed once to a temp file so the layer can be
    written in its own (sorted) order."""
    with open(path, "rb") as raw:
        chunks = decompressed(raw, os.path.basename(path), first=512)
        try:
            head = next(chunks, b"")
        except LayerError:
            return None
        if not _is_tar_header(head):
            return None
        fd, temp = tempfile.mkstemp(dir=temp_dir, prefix=".add-")
        stack.callback(os.unlink, temp)
        with os.fdopen(fd, "wb") as out:
            out.write(head)
            for chunk in chunks:  # a stream damaged further on is a LayerError naming the file
                out.write(chunk)
    try:
        return stack.enter_context(tarfile.open(temp))
    except (tarfile.TarError, EOFError) as error:
        raise LayerError(f"{os.path.basename(path)}: damaged archive ({error})") from None


def _is_tar_header(block: bytes) -> bool:
    if len(block) < 512 or block == bytes(512):
        return False
    try:
        tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True
