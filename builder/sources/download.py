"""The files `ADD <http(s) URL>` fetches, as BuildKit fetches them.

A download streams to a file under the cache root (never whole in memory), at most `max_size`
bytes, each read waiting at most the read wait, through the proxy the environment names
(layers/proxy.py). Redirects are followed (at most 10, http and https only); connections that
drop, time out or are answered 429/5xx are retried with backoff until the timeout. Each URL's
last answer is remembered with its ETag and Last-Modified, so a rebuild asks the server only
whether it changed (If-None-Match / If-Modified-Since) and a 304 reuses the file kept.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote, urljoin, urlsplit

from builder.cache.fetched import mark_used
from layers.proxy import ProxyError, connect

_BLOCK = 1 << 20
_MAX_REDIRECTS = 10  # Go's http.Client
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_RETRIED = frozenset({429, 500, 502, 503, 504})
_MAX_READ_WAIT = 30.0
_USER_AGENT = "pybuild"
DEFAULT_MAX_SIZE = 8 << 30  # bytes one ADD may download, unless PYBUILD_ADD_MAX_SIZE says
DEFAULT_TIMEOUT = 120.0


class DownloadError(Exception):
    """A download that failed; the message names the URL."""


@dataclass(frozen=True)
class Downloaded:
    """A fetched file: where it is kept, its digest, size, and the mtime Last-Modified gave
    (the epoch without one, as BuildKit)."""

    path: str
    digest: str  # sha256:<hex>
    size: int
    mtime: int


def file_name(url: str) -> str:
    """The name ADD gives a download in a directory: the last part of the URL's path, or
    `__unnamed__` when it has none (BuildKit's rule)."""
    base = unquote(urlsplit(url).path).rstrip("/").rpartition("/")[2]
    return base if base not in ("", ".", "..") else "__unnamed__"


class Downloads:
    """The downloads of one build: each URL fetched at most once per build, kept under `root`
    between builds. Safe to share between the threads of concurrent stages."""

    def __init__(self, root: str, *, timeout: float = DEFAULT_TIMEOUT,
                 max_size: int = DEFAULT_MAX_SIZE, retries: int = 5, backoff: float = 0.5,
                 warn: Callable[[str], None] = lambda line: None) -> None:
        self._root = root
        self._timeout, self._max_size = timeout, max_size
        self._retries, self._backoff, self._warn = retries, backoff, warn
        self._read_wait = min(_MAX_READ_WAIT, timeout / 4)
        import ssl  # here: a build without ADD <url> never loads it
        self._tls = ssl.create_default_context()
        self._lock = threading.Lock()
        self._fetched: dict[str, Downloaded] = {}
        self._url_locks: dict[str, threading.Lock] = {}

    def fetch(self, url: str) -> Downloaded:
        """The file at `url`, asked for once per build."""
        with self._lock:
            lock = self._url_locks.setdefault(url, threading.Lock())
        with lock:
            if url not in self._fetched:
                self._fetched[url] = self._fetch(url)
            return self._fetched[url]

    def _fetch(self, url: str) -> Downloaded:
        check_scheme(url)
        directory = os.path.join(self._root, hashlib.sha256(url.encode()).hexdigest())
        os.makedirs(directory, mode=0o700, exist_ok=True)
        mark_used(directory)
        known = _read_meta(os.path.join(directory, "meta.json"))
        conditional = {}
        if known is not None and known.get("etag"):
            conditional["If-None-Match"] = known["etag"]
        if known is not None and known.get("last_modified"):
            conditional["If-Modified-Since"] = known["last_modified"]
        deadline = time.monotonic() + self._timeout
        for attempt in range(self._retries + 1):
            try:
                return self._attempt(url, conditional, known, directory, deadline)
            except _Retry as retry:
                delay = min(self._backoff * 2 ** attempt, 30.0)
                if attempt == self._retries or time.monotonic() + delay >= deadline:
                    raise DownloadError(f"{url}: {retry} (tried {attempt + 1} times)") from None
                self._warn(f"retrying GET {url} in {delay:.2g}s ({attempt + 1}/{self._retries}): "
                           f"{retry}")
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _attempt(self, url: str, conditional: dict[str, str], known: dict | None,
                 directory: str, deadline: float) -> Downloaded:
        import http.client
        current = url
        for _ in range(_MAX_REDIRECTS + 1):
            parts = urlsplit(current)
            wait = min(self._read_wait, deadline - time.monotonic())
            if wait <= 0:
                raise DownloadError(f"{url}: no answer within {self._timeout:g}s")
            try:
                route = connect(parts.scheme, parts.netloc, timeout=wait, context=self._tls,
                                blocksize=_BLOCK)
            except ProxyError as error:
                raise DownloadError(f"{url}: {error}") from None
            connection = route.connection
            try:
                connection.request("GET", route.target(current), headers={
                    "User-Agent": _USER_AGENT, "Accept-Encoding": "identity", **route.headers,
                    **conditional})
                response = connection.getresponse()
                if response.status in _REDIRECTS and response.getheader("Location"):
                    current = urljoin(current, response.getheader("Location"))
                    check_scheme(current, f"{url} redirects to {current}: ")
                    continue
                if response.status == 304 and known is not None:
                    return _downloaded(directory, known)
                if response.status in _RETRIED:
                    raise _Retry(f"{response.status} {response.reason}")
                if response.status != 200:
                    raise DownloadError(f"{url}: {response.status} {response.reason}"
                                        + ("" if current == url else f" (at {current})"))
                return self._save(url, response, directory)
            except http.client.RemoteDisconnected:
                raise _Retry("the server closed the connection without answering") from None
            except http.client.IncompleteRead as error:
                raise _Retry(f"the connection closed after {len(error.partial)} bytes of "
                             f"{error.expected + len(error.partial)}") from None
            except http.client.HTTPException as error:  # huge headers, a garbled status line
                raise DownloadError(f"{url}: not an answer pybuild can read "
                                    f"({type(error).__name__}: {str(error)[:100]})") from None
            except ConnectionRefusedError as error:
                raise DownloadError(f"{url}: {error.strerror or error}") from None
            except (ConnectionError, TimeoutError) as error:
                raise _Retry(f"{type(error).__name__}: {error}" if str(error)
                             else type(error).__name__) from None
            except OSError as error:
                raise DownloadError(f"{url}: {error.strerror or error}") from None
            finally:
                connection.close()
        raise DownloadError(f"{url}: more than {_MAX_REDIRECTS} redirects")

    def _save(self, url: str, response, directory: str) -> Downloaded:
        """Stream the body to a temp file, hashing it; then it replaces the kept copy."""
        import http.client
        length = response.getheader("Content-Length") or ""
        if length.isdigit() and int(length) > self._max_size:
            raise DownloadError(f"{url}: {int(length)} bytes, more than the {self._max_size} "
                                "an ADD may download (PYBUILD_ADD_MAX_SIZE)")
        hasher, size = hashlib.sha256(), 0
        temp = os.path.join(directory, f".data.{os.getpid()}.{threading.get_ident()}")
        try:
            with open(temp, "wb") as out:
                while chunk := response.read(_BLOCK):
                    size += len(chunk)
                    if size > self._max_size:
                        raise DownloadError(f"{url}: more than the {self._max_size} bytes an "
                                            "ADD may download (PYBUILD_ADD_MAX_SIZE)")
                    hasher.update(chunk)
                    out.write(chunk)
            if length.isdigit() and size != int(length):
                raise http.client.IncompleteRead(b"\0" * size, int(length) - size)
            meta = {"url": url, "digest": "sha256:" + hasher.hexdigest(), "size": size,
                    "mtime": _mtime(response.getheader("Last-Modified")),
                    "etag": response.getheader("ETag"),
                    "last_modified": response.getheader("Last-Modified")}
            os.replace(temp, os.path.join(directory, hasher.hexdigest()))
        except BaseException:
            if os.path.exists(temp):
                os.unlink(temp)
            raise
        _write_meta(os.path.join(directory, "meta.json"), meta)
        for name in os.listdir(directory):  # the copies an earlier answer left
            if name not in ("meta.json", hasher.hexdigest()) and not name.startswith("."):
                os.unlink(os.path.join(directory, name))
        return _downloaded(directory, meta)


class _Retry(Exception):
    """A failure worth another try."""


def check_scheme(url: str, prefix: str = "") -> None:
    """Only http and https, without credentials in the URL (which pybuild would not send)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise DownloadError(f"{prefix or url + ': '}only http and https URLs can be downloaded, "
                            f"not {scheme or 'a URL without a scheme'}")
    if parts.username is not None:
        where = prefix or f"{parts.hostname or 'a URL'}: "
        raise DownloadError(f"{where}a user name or password in the URL is not supported yet")


def _downloaded(directory: str, meta: dict) -> Downloaded:
    """The kept file an answer's metadata names (named by its content digest, so metadata
    and file never disagree)."""
    return Downloaded(os.path.join(directory, meta["digest"].removeprefix("sha256:")),
                      meta["digest"], meta["size"], meta["mtime"])


def _mtime(last_modified: str | None) -> int:
    import email.utils
    if not last_modified:
        return 0
    try:
        return int(email.utils.parsedate_to_datetime(last_modified).timestamp())
    except (TypeError, ValueError, IndexError):
        return 0


def _read_meta(path: str) -> dict | None:
    try:
        with open(path) as handle:
            meta = json.load(handle)
        if {"digest", "size", "mtime"} <= set(meta) and \
                os.path.exists(_downloaded(os.path.dirname(path), meta).path):
            return meta
        return None
    except (OSError, ValueError, AttributeError):
        return None


def _write_meta(path: str, meta: dict) -> None:
    temp = f"{path}.{os.getpid()}.{threading.get_ident()}"
    with open(temp, "w") as handle:
        json.dump(meta, handle)
    os.replace(temp, path)
