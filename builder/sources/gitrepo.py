"""The trees `ADD <git URL>` checks out, as BuildKit's dockerfile:1 frontend does.

A URL names a repository, a ref (branch, tag or commit) and a subdirectory:
`https://host/repo.git#ref:subdir`, `git@host:repo.git#ref` (through the build's `--ssh`
agent), `ssh://`, `git://`, or the query form `https://host/repo.git?ref=v1&subdir=dir`.
The ref is resolved with `git ls-remote` (the cache key is the commit, so an unchanged ref hits
without fetching); the commit is then fetched shallow and checked out into a directory kept
under the cache root, one per (repository, commit, keep .git or not).

The host's `git` runs with a clean environment: no system or user config, no prompts, and only
the http, https, ssh and git protocols (so `ext::` and `file://` from a hostile Dockerfile or
a hostile .gitmodules are refused by git itself, on top of the URL check here). Submodules are
fetched, as BuildKit fetches them. Files get 0644 or 0755 as git checks them out, directories
0755, and every mtime is the commit's time (reproducible; BuildKit's own choice is not
documented).
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from builder.cache.fetched import mark_used

_REF = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._/+@-]*")
COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_SCP = re.compile(r"git@([A-Za-z0-9._-]+):([^#]+)")
_QUERY_KEYS = {"ref", "tag", "branch", "subdir"}
_TIMEOUT = 600
# As BuildKit without known hosts given: no ssh config, host keys not checked; never a prompt.
_SSH = ("ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=no "
        "-o UserKnownHostsFile=/dev/null")


class GitError(Exception):
    """A git source that cannot be used; the message names it."""


@dataclass(frozen=True)
class GitUrl:
    """A git source as ADD names it."""

    remote: str  # what git is given
    ref: str  # "" for the remote's HEAD
    subdir: str  # "" for the whole tree
    ssh: bool  # needs the --ssh agent


@dataclass(frozen=True)
class Resolved:
    """A ref resolved to a commit: `refname` is what to fetch."""

    url: GitUrl
    commit: str
    refname: str


def parse(source: str) -> GitUrl:
    """Split a git URL into repository, ref and subdir; refuses what git would read as an
    option, a local path or a helper command."""
    if re.match(r"^(ext::|file://)", source, re.IGNORECASE):
        raise GitError(f"{source}: only https, http, ssh and git URLs can be checked out")
    remote, _, fragment = source.partition("#")
    ref, _, subdir = fragment.partition(":")
    scp = _SCP.fullmatch(remote)
    if scp is None:
        parts = urlsplit(remote)
        if parts.scheme.lower() not in ("http", "https", "ssh", "git") or not parts.hostname:
            raise GitError(f"{source}: not a git URL git may fetch")
        if parts.query:
            if fragment:
                raise GitError(f"{source}: give the ref either after # or as ?ref=, not both")
            query = dict(parse_qsl(parts.query, keep_blank_values=True))
            unknown = set(query) - _QUERY_KEYS
            if unknown:
                raise GitError(f"{source}: unknown query parameter {sorted(unknown)[0]!r} "
                               f"(known: {', '.join(sorted(_QUERY_KEYS))})")
            if sum(key in query for key in ("ref", "tag", "branch")) > 1:
                raise GitError(f"{source}: give only one of ref=, tag= and branch=")
            ref = query.get("ref") or query.get("tag") or query.get("branch") or ""
            subdir = query.get("subdir", "")
            remote = parts._replace(query="").geturl()
        if parts.hostname.startswith("-"):
            raise GitError(f"{source}: a host may not start with '-'")
        ssh = parts.scheme.lower() == "ssh"
    elif scp.group(1).startswith("-") or scp.group(2).startswith("-"):
        raise GitError(f"{source}: a host or repository path may not start with '-'")
    else:
        ssh = True
    if ref and (not _REF.fullmatch(ref) or ".." in ref or ref.endswith((".lock", "/", "."))):
        raise GitError(f"{source}: {ref!r} is not a branch, tag or commit name")
    clean = os.path.normpath("/" + subdir).lstrip("/") if subdir else ""
    if subdir and (subdir.startswith("/") or ".." in subdir.split("/")):
        raise GitError(f"{source}: the subdirectory {subdir!r} must stay inside the repository")
    return GitUrl(remote, ref, clean, ssh)


def git_env(home: str, ssh_socket: str | None) -> dict[str, str]:
    """The environment every git command gets: nothing of the user's or the system's."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home,
           "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
           "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/false", "SSH_ASKPASS": "/bin/false",
           "GIT_ALLOW_PROTOCOL": "http:https:ssh:git", "GIT_PROTOCOL_FROM_USER": "0",
           "LC_ALL": "C", "GIT_SSH_COMMAND": _SSH}
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"):
        if name in os.environ:
            env[name] = os.environ[name]
    if ssh_socket:
        env["SSH_AUTH_SOCK"] = ssh_socket
    return env


class GitSources:
    """The git sources of one build: each ref resolved once per build, each checkout kept under
    `root` between builds. Safe to share between the threads of concurrent stages."""

    def __init__(self, root: str, ssh_socket: Callable[[], str | None]) -> None:
        self._root = root
        self._ssh_socket = ssh_socket
        self._lock = threading.Lock()
        self._resolved: dict[GitUrl, Resolved] = {}
        self._locks: dict[object, threading.Lock] = {}

    def resolve(self, url: GitUrl) -> Resolved:
        """The commit the ref names now (a full commit id names itself)."""
        with self._lock_for(url):
            if url not in self._resolved:
                self._resolved[url] = self._resolve(url)
            return self._resolved[url]

    def checkout(self, resolved: Resolved, keep_git_dir: bool) -> str:
        """The directory holding the commit's tree (with .git when asked), made once."""
        key = hashlib.sha256(f"{resolved.url.remote}\0{resolved.commit}\0{keep_git_dir}"
                             .encode()).hexdigest()
        target = os.path.join(self._root, key)
        with self._lock_for(key):
            try:
                mark_used(target)  # from now on a prune leaves it alone
            except FileNotFoundError:
                self._checkout(resolved, keep_git_dir, target)
        return target

    def _lock_for(self, key: object) -> threading.Lock:
        """One lock per ref or checkout: different ones proceed at once."""
        with self._lock:
            return self._locks.setdefault(key, threading.Lock())

    def _resolve(self, url: GitUrl) -> Resolved:
        if COMMIT.fullmatch(url.ref):
            return Resolved(url, url.ref, url.ref)
        wanted = url.ref or "HEAD"
        listed = self._git(url, ["ls-remote", "--", url.remote, wanted, wanted + "^{}"], None)
        refs = {}
        for line in listed.splitlines():
            commit, _, name = line.partition("\t")
            refs[name] = commit
        for name in ((f"refs/tags/{wanted}^{{}}", f"refs/tags/{wanted}", f"refs/heads/{wanted}",
                      wanted) if url.ref else ("HEAD",)):
            if name in refs:
                return Resolved(url, refs[name], name.removesuffix("^{}"))
        raise GitError(f"{url.remote}: no branch or tag {wanted!r} (a commit must be given "
                       "as its full id)")

    def _checkout(self, resolved: Resolved, keep_git_dir: bool, target: str) -> None:
        os.makedirs(self._root, exist_ok=True)
        work = tempfile.mkdtemp(dir=self._root, prefix=".checkout-")
        try:
            url = resolved.url
            tree = os.path.join(work, "tree")
            self._git(url, ["init", "-q", "--", tree], work)
            fetched = self._fetch(resolved, tree)
            if fetched != resolved.commit:
                raise GitError(f"{url.remote}: {url.ref or 'HEAD'} moved to {fetched} while "
                               "building; build again")
            self._git(url, ["-c", "advice.detachedHead=false", "checkout", "-q", "--detach",
                            fetched], tree)
            self._git(url, ["submodule", "update", "-q", "--init", "--recursive", "--depth=1"],
                      tree)
            when = int(self._git(url, ["show", "-s", "--format=%ct", fetched], tree).strip())
            if not keep_git_dir:
                _drop_git_dirs(tree)
            _normalize(tree, when)
            try:
                os.rename(tree, target)
            except OSError:  # another build made it meanwhile: the same commit's tree
                if not os.path.isdir(target):
                    raise
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _fetch(self, resolved: Resolved, tree: str) -> str:
        """Fetch the commit shallow; a commit named by its id from a server that gives only
        what it advertises (protocol v0 without uploadpack.allowReachableSHA1InWant) is looked
        for in all its branches and tags, fetched whole."""
        url = resolved.url
        try:
            self._git(url, ["fetch", "-q", "--depth=1", "--no-tags", "--", url.remote,
                            resolved.refname], tree)
            return self._git(url, ["rev-parse", "FETCH_HEAD^{commit}"], tree).strip()
        except GitError:
            if resolved.refname != resolved.commit:
                raise
        self._git(url, ["fetch", "-q", "--no-tags", "--", url.remote,
                        "+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*"], tree)
        try:
            return self._git(url, ["rev-parse", "--verify", "-q", f"{resolved.commit}^{{commit}}"],
                             tree).strip()
        except GitError:
            raise GitError(f"{url.remote}: no commit {resolved.commit} on any branch or "
                           "tag") from None

    def _git(self, url: GitUrl, args: list[str], cwd: str | None) -> str:
        socket = self._ssh_socket() if url.ssh else None
        if url.ssh and not socket:
            raise GitError(f"{url.remote}: an ssh repository needs the build's --ssh agent "
                           "(--ssh default)")
        with tempfile.TemporaryDirectory(prefix="pybuild-git-home-") as home:
            try:
                done = subprocess.run(["git", *args], cwd=cwd, env=git_env(home, socket),
                                      capture_output=True, text=True, timeout=_TIMEOUT,
                                      stdin=subprocess.DEVNULL)
            except FileNotFoundError:
                raise GitError("ADD of a git URL needs the `git` program, not found") from None
            except subprocess.TimeoutExpired:
                raise GitError(f"{url.remote}: git {args[0]} took more than {_TIMEOUT}s") from None
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines()
            said = [line for line in lines if line.startswith(("fatal:", "error:"))] or lines[-1:]
            detail = " ".join(said[:3]) or f"status {done.returncode}"
            raise GitError(f"{url.remote}: git {args[0]} failed: {detail}")
        return done.stdout


def _drop_git_dirs(tree: str) -> None:
    """Remove the repository's .git and its submodules' (git never checks out a file of that
    name, so every one is git's own)."""
    for directory, dirs, files in os.walk(tree):
        if ".git" in dirs:
            dirs.remove(".git")
            shutil.rmtree(os.path.join(directory, ".git"))
        if ".git" in files:
            os.unlink(os.path.join(directory, ".git"))


def _normalize(tree: str, when: int) -> None:
    """Modes as git means them (0755 executables and directories, 0644 files), whatever the
    umask was, and one mtime: the commit's."""
    for directory, dirs, files in os.walk(tree, topdown=False):
        for name in files + dirs:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            if not os.path.islink(path):
                executable = os.path.isdir(path) or st.st_mode & 0o100
                os.chmod(path, 0o755 if executable else 0o644)
            os.utime(path, (when, when), follow_symlinks=False)
    os.chmod(tree, 0o755)
    os.utime(tree, (when, when))
