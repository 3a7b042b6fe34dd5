"""ADD <http(s) URL>: built end to end against a file server on 127.0.0.1 (threads of the test),
with Docker 20.10's results as the rule (mode 0600, mtime from Last-Modified, root's, named
after the URL's path, never extracted); the cache keyed by content; hostile servers."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from builder.sources.download import DownloadError, Downloads, file_name
from tests.http_support import LAST_MODIFIED_EPOCH, file_server
from tests.registry_support import shut_down
from tests.support import docker, docker_available, pybuild, require

HELLO = b"hello from the server\n"
ARCHIVE = gzip.compress(b"not really a tar, and never extracted")


@pytest.fixture
def server():
    files = {"/hello.txt": HELLO, "/pkg.tar.gz": ARCHIVE, "/flaky": b"third time lucky",
             "/undated/hello.txt": HELLO}
    httpd, served = file_server(files)
    yield f"http://127.0.0.1:{httpd.server_address[1]}", served
    shut_down(httpd)


def build(tmp_path: Path, dockerfile: str, *options: str, env: dict | None = None):
    context = tmp_path / "context"
    context.mkdir(exist_ok=True)
    (context / "Dockerfile").write_text(dockerfile)
    out = tmp_path / "image.tar"
    result = pybuild("--cache-dir", str(tmp_path / "cache"), "-o", str(out), *options,
                     str(context), env=env)
    return out, result


@dataclass(frozen=True)
class Entry:
    mode: int
    uid: int
    gid: int
    mtime: int
    data: bytes


def layer_entries(tarball: Path) -> dict[str, Entry]:
    """Every entry of every layer, the top layer's winning."""
    entries = {}
    with tarfile.open(tarball) as archive:
        for layer in json.load(archive.extractfile("manifest.json"))[0]["Layers"]:
            with tarfile.open(fileobj=io.BytesIO(archive.extractfile(layer).read())) as tar:
                for info in tar:
                    data = tar.extractfile(info).read() if info.isfile() else b""
                    entries[info.name.strip("/")] = Entry(info.mode, info.uid, info.gid,
                                                          int(info.mtime), data)
    return entries


def test_add_url_lands_as_docker_puts_it(tmp_path: Path, server) -> None:
    base, served = server
    out, result = build(tmp_path, "FROM scratch\n"
                        f"ADD {base}/hello.txt /dl/\n"
                        f"ADD {base}/pkg.tar.gz /dl/\n"
                        f"ADD --chown=7:8 --chmod=755 {base}/hello.txt /renamed\n")
    assert result.returncode == 0, result.stderr
    entries = layer_entries(out)
    hello, archive, renamed = entries["dl/hello.txt"], entries["dl/pkg.tar.gz"], entries["renamed"]
    assert (hello.mode, hello.uid, hello.gid, hello.mtime, hello.data) == \
        (0o600, 0, 0, LAST_MODIFIED_EPOCH, HELLO)
    assert archive.data == ARCHIVE  # never extracted, whatever its name
    assert (renamed.mode, renamed.uid, renamed.gid, renamed.data) == (0o755, 7, 8, HELLO)


def test_an_unchanged_download_hits_and_is_not_downloaded_again(tmp_path: Path, server) -> None:
    base, served = server
    dockerfile = f"FROM scratch\nADD {base}/hello.txt /\n"
    first = build(tmp_path, dockerfile)[1]
    assert first.returncode == 0, first.stderr
    again = build(tmp_path, dockerfile)[1]
    assert again.returncode == 0, again.stderr
    assert "1 cached" in again.stderr or "CACHED" in again.stderr
    assert served.statuses("/hello.txt") == [200, 304]  # the rebuild asked only if it changed
    served.files["/hello.txt"] = b"changed\n"
    changed_out, changed = build(tmp_path, dockerfile)
    assert changed.returncode == 0 and "CACHED" not in changed.stderr
    assert layer_entries(changed_out)["hello.txt"].data == b"changed\n"


def test_checksum_verified_and_a_cached_layer_needs_no_request(tmp_path: Path, server) -> None:
    base, served = server
    digest = "sha256:" + hashlib.sha256(HELLO).hexdigest()
    dockerfile = f"FROM scratch\nADD --checksum={digest} {base}/hello.txt /\n"
    assert build(tmp_path, dockerfile)[1].returncode == 0
    assert build(tmp_path, dockerfile)[1].returncode == 0
    assert served.statuses("/hello.txt") == [200]  # the rebuild asked nothing
    wrong = "sha256:" + "0" * 64
    (tmp_path / "image.tar").unlink()
    out, failed = build(tmp_path, f"FROM scratch\n\nADD --checksum={wrong} {base}/hello.txt /\n")
    assert failed.returncode == 1
    assert "Dockerfile:3" in failed.stderr and "checksum mismatch" in failed.stderr
    assert not out.exists()


def test_du_lists_and_prune_removes_unused_downloads(tmp_path: Path, server) -> None:
    base, served = server
    dockerfile = f"FROM scratch\nADD {base}/hello.txt /\n"
    assert build(tmp_path, dockerfile)[1].returncode == 0
    cache = ("--cache-dir", str(tmp_path / "cache"))
    listed = b"ADD downloads and git checkouts  %d ("
    assert listed % 1 in pybuild("du", *cache).stdout
    assert pybuild("prune", *cache).returncode == 0  # unused for 7 days: kept
    assert listed % 1 in pybuild("du", *cache).stdout
    time.sleep(1.01 - time.time() % 1)  # unused since a later second
    assert pybuild("prune", "--filter", "until=0s", *cache).returncode == 0
    assert listed % 0 in pybuild("du", *cache).stdout
    assert os.listdir(tmp_path / "cache" / "downloads") == []
    again = build(tmp_path, dockerfile, "--no-cache")[1]
    assert again.returncode == 0, again.stderr
    assert served.statuses("/hello.txt") == [200, 200]  # nothing kept to ask about


@pytest.mark.parametrize("line, message, status", [
    ("ADD file:///etc/passwd /", "only http:// and https:// URLs", 1),
    ("ADD ftp://127.0.0.1/x /", "only http:// and https:// URLs", 1),
    ("ADD file:///srv/repo.git /src", "only https, http, ssh and git URLs", 1),
    ("COPY http://127.0.0.1/x /", "COPY cannot read a URL", 1),
    ("ADD http://me:pw@127.0.0.1:9/x /", "a user name or password in the URL", 1),
    ("ADD --checksum=md5:abc http://127.0.0.1/x /", "invalid --checksum", 1),
    ("ADD --checksum=sha256:" + "0" * 64 + " Dockerfile /", "needs exactly one source", 1),
])
def test_sources_that_are_refused(tmp_path: Path, line: str, message: str, status: int) -> None:
    out, result = build(tmp_path, f"FROM scratch\n{line}\n")
    assert result.returncode == status, result.stderr
    assert message in result.stderr and ("Dockerfile:2" in result.stderr or status == 2)


@pytest.mark.parametrize("path, message", [
    ("/endless", "more than the 65536 bytes an ADD may download"),
    ("/short", "the connection closed after 9 bytes of 1000"),
    ("/big-length", f"{1 << 40} bytes, more than the 65536"),
    ("/huge-header", "not an answer pybuild can read"),
    ("/loop", "more than 10 redirects"),
    ("/to-file", "only http and https URLs can be downloaded, not file"),
    ("/missing", "404"),
    ("/silent", "timed out"),
])
def test_hostile_servers_fail_clearly_and_leave_nothing(tmp_path: Path, server, path: str,
                                                        message: str) -> None:
    base, served = server
    downloads = Downloads(str(tmp_path / "downloads"), timeout=5, max_size=65536, retries=1,
                          backoff=0.01)
    with pytest.raises(DownloadError, match=message):
        downloads.fetch(base + path)
    left = [name for _, _, names in os.walk(tmp_path / "downloads") for name in names]
    assert left == []


def test_a_failing_server_is_retried(tmp_path: Path, server) -> None:
    base, served = server
    warnings: list[str] = []
    downloads = Downloads(str(tmp_path / "downloads"), retries=3, backoff=0.01,
                          warn=warnings.append)
    with open(downloads.fetch(base + "/flaky").path, "rb") as handle:
        assert handle.read() == b"third time lucky"
    assert served.statuses("/flaky") == [503, 503, 200] and len(warnings) == 2


def test_the_size_limit_from_the_environment_fails_the_build(tmp_path: Path, server) -> None:
    base, _ = server
    _, result = build(tmp_path, f"FROM scratch\nADD {base}/endless /\n",
                      env={"PYBUILD_ADD_MAX_SIZE": "1m"})
    assert result.returncode == 1
    assert "Dockerfile:2" in result.stderr and "PYBUILD_ADD_MAX_SIZE" in result.stderr


@pytest.mark.parametrize("url, name", [
    ("http://h/a/b.txt", "b.txt"), ("http://h/a/dir/", "dir"), ("http://h", "__unnamed__"),
    ("http://h/", "__unnamed__"), ("http://h/x%20y?q=1#f", "x y"),
])
def test_file_name(url: str, name: str) -> None:
    assert file_name(url) == name


def test_docker_20_10_agrees(tmp_path: Path, server) -> None:
    """Docker's BuildKit (its http source reaches 127.0.0.1 with --network host) and pybuild
    give each downloaded file the same name, content, mode, owner and mtime."""
    require(docker_available(), "a Docker engine")
    base, _ = server
    dockerfile = ("FROM scratch\n"
                  f"ADD {base}/hello.txt /dl/\n"
                  f"ADD {base}/pkg.tar.gz /dl/\n"
                  f"ADD {base}/hello.txt?v=1 /named\n"
                  f"ADD --chown=7:8 --chmod=755 {base}/hello.txt /tool\n"
                  f"ADD {base}/undated/hello.txt /undated\n")
    out, result = build(tmp_path, dockerfile)
    assert result.returncode == 0, result.stderr
    ours = {path: entry for path, entry in layer_entries(out).items() if entry.data}
    docker("build", "--network", "host", "--no-cache", "-o",
           f"type=tar,dest={tmp_path / 'docker.tar'}", str(tmp_path / "context"))
    with tarfile.open(tmp_path / "docker.tar") as archive:
        theirs = {info.name.strip("/"): Entry(info.mode, info.uid, info.gid, int(info.mtime),
                                              archive.extractfile(info).read())
                  for info in archive if info.isfile()}
    # Docker 20.10's built-in frontend leaves an ADD <url> --chmod at 0600, a bug fixed in
    # docker/dockerfile:1.3 (moby/buildkit#2114): pybuild applies it, as BuildKit does since.
    assert theirs["tool"].mode == 0o600
    assert ours == {**theirs, "tool": replace(theirs["tool"], mode=0o755)}
    assert set(ours) == {"dl/hello.txt", "dl/pkg.tar.gz", "named", "tool", "undated"}
    assert ours["undated"].mtime == 0  # no Last-Modified: the epoch
