"""ADD <git URL>: built end to end against a `git daemon` on 127.0.0.1 serving a bare repository
made here, checked against BuildKit's documented behaviour (Docker 20.10's builder has no ADD
of a git URL): refs, subdirectories, --keep-git-dir, --checksum, the cache keyed by commit, and
hostile URLs and submodules refused."""
from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from builder.sources.gitrepo import GitError, git_env, parse
from tests.registry_support import serve, shut_down
from tests.support import pybuild, require
from tests.test_add_url import build, layer_entries

_SSHD = "/usr/sbin/sshd"


@dataclass(frozen=True)
class Served:
    url: str  # git://127.0.0.1:PORT/repo.git
    work: Path  # the working repository pushed to it
    root: Path  # the daemon's base path
    first: str  # commit ids
    second: str

    def git(self, *args: str) -> str:
        return _git(self.work, *args)

    def commit_time(self, commit: str) -> int:
        return int(self.git("show", "-s", "--format=%ct", commit))


def _git(cwd: Path, *args: str, when: int = 1_500_000_000) -> str:
    env = {"PATH": os.environ["PATH"], "HOME": str(cwd), "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
           "GIT_AUTHOR_DATE": f"{when} +0000", "GIT_COMMITTER_DATE": f"{when} +0000"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


def _commit(work: Path, files: dict[str, str], message: str, when: int) -> str:
    for name, text in files.items():
        path = work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    os.chmod(work / "bin/run.sh", 0o755)
    if not (work / "escape").is_symlink():
        (work / "escape").symlink_to("../..")
    _git(work, "add", "-A")
    _git(work, "commit", "-q", "-m", message, when=when)
    return _git(work, "rev-parse", "HEAD")


@pytest.fixture
def served(tmp_path: Path):
    require(shutil.which("git") is not None, "git (.ci/setup installs it)")
    work, root = tmp_path / "work", tmp_path / "served"
    work.mkdir()
    root.mkdir()
    _git(work, "init", "-q", "-b", "main")
    first = _commit(work, {"README": "one\n", "bin/run.sh": "#!/bin/sh\n", "sub/inner.txt": "in\n"},
                    "first", 1_600_000_000)
    _git(work, "tag", "-a", "v1", "-m", "v1")
    second = _commit(work, {"README": "two\n"}, "second", 1_700_000_000)
    _git(root, "clone", "-q", "--bare", str(work), "repo.git")
    _git(work, "remote", "add", "origin", str(root / "repo.git"))
    port = _free_port()
    daemon = subprocess.Popen(["git", "daemon", "--reuseaddr", "--export-all",
                               f"--base-path={root}", "--listen=127.0.0.1", f"--port={port}",
                               str(root)], stderr=subprocess.DEVNULL)
    try:
        _wait_for(port)
        yield Served(f"git://127.0.0.1:{port}/repo.git", work, root, first, second)
    finally:
        daemon.terminate()
        daemon.wait()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for(port: int) -> None:
    for _ in range(100):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)


def _files(tarball: Path, prefix: str = "src/") -> dict[str, str]:
    return {path[len(prefix):]: entry.data.decode() for path, entry in
            layer_entries(tarball).items() if path.startswith(prefix) and entry.data}


@pytest.mark.parametrize("suffix, expected", [
    ("", {"README": "two\n", "bin/run.sh": "#!/bin/sh\n", "sub/inner.txt": "in\n"}),
    ("#main", {"README": "two\n", "bin/run.sh": "#!/bin/sh\n", "sub/inner.txt": "in\n"}),
    ("#v1", {"README": "one\n", "bin/run.sh": "#!/bin/sh\n", "sub/inner.txt": "in\n"}),
    ("#{first}", {"README": "one\n", "bin/run.sh": "#!/bin/sh\n", "sub/inner.txt": "in\n"}),
    ("#main:sub", {"inner.txt": "in\n"}),
    ("#:sub", {"inner.txt": "in\n"}),
    ("?ref=v1&subdir=sub", {"inner.txt": "in\n"}),
    ("?tag=v1", {"README": "one\n", "bin/run.sh": "#!/bin/sh\n", "sub/inner.txt": "in\n"}),
])
def test_refs_and_subdirs(tmp_path: Path, served: Served, suffix: str, expected: dict) -> None:
    out, result = build(tmp_path, f"FROM scratch\nADD {served.url}{suffix.format(first=served.first)} /src\n")
    assert result.returncode == 0, result.stderr
    assert _files(out) == expected


def test_modes_owner_mtime_and_no_git_dir(tmp_path: Path, served: Served) -> None:
    """Files as git checks them out (0644, 0755 when executable), root's, the commit's time as
    every mtime; .git dropped unless --keep-git-dir."""
    out, result = build(tmp_path, f"FROM scratch\nADD {served.url}#main /src\n")
    assert result.returncode == 0, result.stderr
    entries = layer_entries(out)
    when = served.commit_time(served.second)
    assert (entries["src/README"].mode, entries["src/bin/run.sh"].mode,
            entries["src/bin"].mode) == (0o644, 0o755, 0o755)
    assert {(e.uid, e.gid, e.mtime) for p, e in entries.items() if p.startswith("src/")} == \
        {(0, 0, when)}
    assert not any(path.startswith("src/.git") for path in entries)
    out.unlink()
    kept, result = build(tmp_path, f"FROM scratch\nADD --keep-git-dir --chown=7:8 "
                                   f"{served.url}#v1 /src\n")
    assert result.returncode == 0, result.stderr
    entries = layer_entries(kept)
    assert "src/.git/HEAD" in entries and entries["src/README"].data == b"one\n"
    assert (entries["src/README"].uid, entries["src/README"].gid) == (7, 8)


def test_checksum_is_the_commit(tmp_path: Path, served: Served) -> None:
    out, result = build(tmp_path, f"FROM scratch\nADD --checksum={served.second} "
                                  f"{served.url}#main /src\n")
    assert result.returncode == 0, result.stderr
    out.unlink()
    out, failed = build(tmp_path, f"FROM scratch\n\nADD --checksum={served.first} "
                                  f"{served.url}#main /src\n")
    assert failed.returncode == 1
    assert "Dockerfile:3" in failed.stderr and "checksum mismatch" in failed.stderr, failed.stderr
    assert served.second in failed.stderr and not out.exists()


def test_an_unchanged_ref_hits_and_a_moved_branch_fetches_again(tmp_path: Path,
                                                                served: Served) -> None:
    dockerfile = f"FROM scratch\nADD {served.url}#main /src\n"
    assert build(tmp_path, dockerfile)[1].returncode == 0
    shutil.rmtree(tmp_path / "cache" / "git")  # a hit must not need the checkout
    again = build(tmp_path, dockerfile)[1]
    assert again.returncode == 0 and "CACHED" in again.stderr, again.stderr
    assert not (tmp_path / "cache" / "git").exists()
    _commit(served.work, {"README": "three\n"}, "third", 1_800_000_000)
    served.git("push", "-q", "origin", "main")
    out, moved = build(tmp_path, dockerfile)
    assert moved.returncode == 0 and "CACHED" not in moved.stderr, moved.stderr
    assert _files(out)["README"] == "three\n"


def test_prune_all_removes_checkouts_no_build_uses(tmp_path: Path, served: Served) -> None:
    dockerfile = f"FROM scratch\nADD {served.url}#main /src\n"
    assert build(tmp_path, dockerfile)[1].returncode == 0
    git = tmp_path / "cache" / "git"
    assert len(os.listdir(git)) == 1
    time.sleep(1.01 - time.time() % 1)
    assert pybuild("prune", "--all", "--cache-dir", str(tmp_path / "cache")).returncode == 0
    assert os.listdir(git) == []
    out, again = build(tmp_path, dockerfile, "--no-cache")
    assert again.returncode == 0, again.stderr
    assert _files(out)["README"] == "two\n"


class GitHttpHandler(BaseHTTPRequestHandler):
    """Smart HTTP: each request handed to `git http-backend` as CGI, its answer passed on.
    Protocol v0 only (the Git-Protocol header is not passed on), as an older server speaks it:
    it gives no commit it does not advertise."""

    def do_GET(self) -> None:
        self._backend()

    def do_POST(self) -> None:
        self._backend()

    def log_message(self, *args) -> None:
        """Quiet."""

    def _backend(self) -> None:
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        env = {"PATH": os.environ["PATH"], "GIT_PROJECT_ROOT": str(self.server.root),
               "GIT_HTTP_EXPORT_ALL": "1", "REQUEST_METHOD": self.command, "PATH_INFO": path,
               "QUERY_STRING": query, "CONTENT_TYPE": self.headers.get("Content-Type", ""),
               "CONTENT_LENGTH": str(length), "REMOTE_ADDR": "127.0.0.1",
               "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", "")}
        answer = subprocess.run(["git", "http-backend"], input=self.rfile.read(length), env=env,
                                capture_output=True).stdout
        head, _, body = answer.partition(b"\r\n\r\n")
        headers = [line.partition(": ")[::2] for line in head.decode().split("\r\n")]
        status = next((int(value.split()[0]) for name, value in headers
                       if name.lower() == "status"), 200)
        self.send_response(status)
        for name, value in headers:
            if name.lower() != "status":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_over_smart_http(tmp_path: Path, served: Served) -> None:
    """The https form's transport (here plain http: git http-backend on 127.0.0.1); a commit
    named by id is found though the server does not give unadvertised ones."""
    httpd = serve(GitHttpHandler, root=served.root)
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/repo.git"
        out, result = build(tmp_path, f"FROM scratch\nADD {url}#v1:sub /src\n")
        assert result.returncode == 0, result.stderr
        assert _files(out) == {"inner.txt": "in\n"}
        out.unlink()
        out, result = build(tmp_path, f"FROM scratch\nADD {url}#{served.first} /src\n")
        assert result.returncode == 0, result.stderr
        assert _files(out)["README"] == "one\n"
        missing = "0" * 40
        out, result = build(tmp_path, f"FROM scratch\nADD {url}#{missing} /src\n")
        assert result.returncode == 1 and f"no commit {missing}" in result.stderr, result.stderr
    finally:
        shut_down(httpd)


def test_over_ssh_through_the_build_agent(tmp_path: Path, served: Served) -> None:
    """An ssh URL authenticates with the key given to --ssh default (the build's own agent), on
    an sshd of the test's on 127.0.0.1."""
    require(os.path.exists(_SSHD), "sshd (openssh-server; .ci/setup installs it)")
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    for name in ("host", "user"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / name)],
                       check=True)
    (keys / "authorized_keys").write_text((keys / "user.pub").read_text())
    port = _free_port()
    (keys / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {keys / 'host'}\n"
        f"AuthorizedKeysFile {keys / 'authorized_keys'}\nPidFile none\nUsePAM no\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nStrictModes no\n"
        "PermitRootLogin prohibit-password\n")
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation dir
    sshd = subprocess.Popen([_SSHD, "-D", "-e", "-f", str(keys / "sshd_config")],
                            stderr=subprocess.DEVNULL)
    try:
        _wait_for(port)
        url = f"ssh://{getpass.getuser()}@127.0.0.1:{port}{served.root}/repo.git#v1:sub"
        out, result = build(tmp_path, f"FROM scratch\nADD {url} /src\n",
                            "--ssh", f"default={keys / 'user'}")
        assert result.returncode == 0, result.stderr
        assert _files(out) == {"inner.txt": "in\n"}
    finally:
        sshd.terminate()
        sshd.wait()


def test_submodules_are_fetched(tmp_path: Path, served: Served) -> None:
    """As BuildKit: a submodule's tree is checked out with the repository's."""
    library = tmp_path / "library"
    library.mkdir()
    _git(library, "init", "-q", "-b", "main")
    (library / "lib.txt").write_text("library\n")
    _git(library, "add", "-A")
    _git(library, "commit", "-q", "-m", "lib")
    _git(served.root, "clone", "-q", "--bare", str(library), "lib.git")
    served.git("submodule", "add", "-q", served.url.replace("repo.git", "lib.git"), "vendored")
    _commit(served.work, {}, "with a submodule", 1_800_000_000)
    served.git("push", "-q", "origin", "main")
    out, result = build(tmp_path, f"FROM scratch\nADD {served.url}#main /src\n")
    assert result.returncode == 0, result.stderr
    files = _files(out)
    assert files["vendored/lib.txt"] == "library\n" and ".gitmodules" in files
    assert not any(name.startswith("vendored/.git") for name in files)


def test_submodules_are_fetched_but_never_from_a_local_path(tmp_path: Path,
                                                            served: Served) -> None:
    """A hostile .gitmodules naming a local repository is refused by git (file:// is not an
    allowed protocol)."""
    served.git("-c", "protocol.file.allow=always", "submodule", "add", "-q",
               str(served.work), "vendored")
    _commit(served.work, {}, "with a submodule", 1_800_000_000)
    served.git("push", "-q", "origin", "main")
    out, result = build(tmp_path, f"FROM scratch\nADD {served.url}#main /src\n")
    assert result.returncode == 1 and "Dockerfile:2" in result.stderr
    assert "submodule" in result.stderr and "not allowed" in result.stderr, result.stderr


@pytest.mark.parametrize("line, message", [
    ("ADD ext::sh%20-c%20touch%20/tmp/pwned /src", "only https, http, ssh and git URLs"),
    ("ADD file:///srv/repo.git /src", "only https, http, ssh and git URLs"),
    ("ADD {url}#-uupload-pack=touch /src", "is not a branch, tag or commit name"),
    ("ADD {url}#main:../etc /src", "must stay inside the repository"),
    ("ADD {url}#main:nowhere /src", "no directory 'nowhere' in the repository"),
    ("ADD {url}#main:escape /src", "the subdirectory is a symlink out of the repository"),
    ("ADD {url}#nosuchbranch /src", "no branch or tag 'nosuchbranch'"),
    ("ADD {url}?ref=main&evil=1 /src", "unknown query parameter 'evil'"),
    ("ADD git@127.0.0.1:repo.git /src", "needs the build's --ssh agent"),
    ("ADD --checksum=sha256:" + "0" * 64 + " {url} /src", "a git source's checksum"),
    ("ADD --keep-git-dir Dockerfile /src", "--keep-git-dir needs a git URL"),
    ("COPY {url} /src", "COPY cannot read a URL"),
])
def test_hostile_and_wrong_sources_are_refused(tmp_path: Path, served: Served, line: str,
                                               message: str) -> None:
    out, result = build(tmp_path, f"FROM scratch\n{line.format(url=served.url)}\n")
    assert result.returncode == 1, result.stderr
    assert message in result.stderr and "Dockerfile:2" in result.stderr, result.stderr
    assert not out.exists()


@pytest.mark.parametrize("source, remote, ref, subdir, ssh", [
    ("https://h/r.git#v1:a/b", "https://h/r.git", "v1", "a/b", False),
    ("https://h/r.git?branch=dev&subdir=x", "https://h/r.git", "dev", "x", False),
    ("git@h:o/r.git#main", "git@h:o/r.git", "main", "", True),
    ("ssh://git@h/o/r.git", "ssh://git@h/o/r.git", "", "", True),
    ("git://h/r#:docs/", "git://h/r", "", "docs", False),
])
def test_parse(source: str, remote: str, ref: str, subdir: str, ssh: bool) -> None:
    url = parse(source)
    assert (url.remote, url.ref, url.subdir, url.ssh) == (remote, ref, subdir, ssh)


@pytest.mark.parametrize("source", [
    "git@-oProxyCommand=x:r.git", "git@h:-r.git", "ssh://-oProxyCommand=x/r.git",
    "https://h/r.git?ref=a&tag=b", "https://h/r.git?ref=a#b", "https://h/r.git#a b",
    "https://h/r.git#a..b", "file:///r.git", "ext::sh -c id",
])
def test_parse_refuses(source: str) -> None:
    with pytest.raises(GitError):
        parse(source)


def test_git_runs_with_nothing_of_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    """No user or system config, no prompt, only network protocols, the agent socket given."""
    monkeypatch.setenv("GIT_DIR", "/elsewhere")
    monkeypatch.setenv("GIT_SSH_COMMAND", "touch /tmp/pwned")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    env = git_env("/tmp/home", "/run/agent.sock")
    assert "GIT_DIR" not in env and env["GIT_SSH_COMMAND"].startswith("ssh -F /dev/null")
    assert (env["HOME"], env["SSH_AUTH_SOCK"], env["HTTPS_PROXY"]) == \
        ("/tmp/home", "/run/agent.sock", "http://127.0.0.1:3128")
    assert env["GIT_ALLOW_PROTOCOL"] == "http:https:ssh:git"
    assert env["GIT_CONFIG_NOSYSTEM"] == "1" and env["GIT_TERMINAL_PROMPT"] == "0"
    assert "SSH_AUTH_SOCK" not in git_env("/tmp/home", None)
