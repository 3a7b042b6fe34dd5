"""HTTP to one registry: kept-alive connections, retries, redirects and authentication.

A `Session` is the state one registry host needs: its scheme, the credentials, the challenge it
answered with, and the tokens fetched so far. Every request names the token scopes it needs;
the session sends a cached token that covers them, fetches one for the union of everything asked
of this registry so far when none does (so a push after a pull escalates the one token rather
than juggling several), and on a 401 learns the challenge and tries once more.

What is retried, with exponential backoff: 429 (after its Retry-After, capped), 500/502/503/504,
and connections that drop or time out (refused ones only once the registry has answered: before
that, nothing listens there), but a request with a body only when the body can be rewound. A
request and its retries together take at most the session's `timeout`, and a read waits at most
a quarter of it (30 s at most), so a registry that accepts connections and never answers fails
the request in bounded time; each retry is told to `warn` as it is decided. A blob body that
drops halfway is picked up where it stopped (`Range: bytes=N-`), so a reader never sees the
seam. Redirects are followed; Authorization never goes to another host. A body read whole (not
streamed) is read no further than its `BodyLimit`, so a hostile registry cannot fill memory.
Connections go through the proxy HTTP_PROXY/HTTPS_PROXY name, unless NO_PROXY exempts the
registry (layers/proxy.py).
"""
from __future__ import annotations

import base64
import email.utils
import http.client
import io
import itertools
import socket
import ssl
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import urlencode, urljoin, urlsplit

from layers.registry.auth import Challenge, Scopes, Token, parse_challenge, parse_scopes, \
    parse_token, render_scopes
from layers.registry.credentials import Credentials
from layers.proxy import ProxyError, Route, connect
from layers.registry.errors import RegistryError, describe

DOCKER_HUB_API = "registry-1.docker.io"
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_REDIRECTS = 5
_RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
# What a dropped connection or a timeout raises (RemoteDisconnected and IncompleteRead included).
_DROPPED = (ConnectionError, TimeoutError, http.client.HTTPException)
_BLOCK = 1 << 20
_TOKEN_MARGIN = 10  # seconds: a token this close to expiry is not sent
_MAX_READ_WAIT = 30.0  # seconds a read may wait for the next bytes, at most
DEFAULT_TIMEOUT = 120.0  # seconds a request may take, its retries included
_CLIENT_ID = "pybuild"
_USER_AGENT = "pybuild"


@dataclass(frozen=True)
class BodyLimit:
    """The most a response body read whole may hold, and what it is, for the message."""

    size: int
    of: str

    def exceeded(self, subject: str) -> RegistryError:
        return RegistryError(f"{subject}: larger than {self.size >> 20} MiB, the limit for "
                             f"{self.of}")


# Error bodies, upload answers and tokens are small; nothing a registry sends whole is bigger.
RESPONSE_LIMIT = BodyLimit(4 << 20, "a registry response")


@dataclass(frozen=True)
class Response:
    """A registry's answer, its body read (empty for a HEAD, and for `Session.open`)."""

    status: int
    headers: http.client.HTTPMessage
    body: bytes
    url: str

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def location(self) -> str:
        """The `Location` header as an absolute URL: registries send relative ones too."""
        location = self.header("Location")
        if not location:
            raise RegistryError(f"{self.status} without a Location header", self.status)
        return urljoin(self.url, location)


@dataclass(frozen=True)
class _Body:
    """A request body and how to send it again: bytes always can be, a file only if seekable,
    pieces made as they are sent (length -1: sent chunked) never."""

    content: bytes | BinaryIO | Iterable[bytes] | None
    length: int
    start: int

    @property
    def rewindable(self) -> bool:
        return self.start >= 0

    def rewind(self) -> None:
        if hasattr(self.content, "read") and self.start >= 0:
            self.content.seek(self.start)


def _body(content: bytes | BinaryIO | Iterable[bytes] | None,
          headers: Mapping[str, str]) -> _Body:
    if content is None or isinstance(content, (bytes, bytearray, memoryview)):
        return _Body(content, len(content or b""), 0)
    if not hasattr(content, "read"):
        return _Body(content, -1, -1)
    if not content.seekable():
        return _Body(content, int(headers["Content-Length"]), -1)
    start = content.tell()
    end = content.seek(0, io.SEEK_END)
    content.seek(start)
    return _Body(content, end - start, start)


def _is_local(registry: str) -> bool:
    host = registry[1:registry.find("]")] if registry.startswith("[") else \
        registry.rpartition(":")[0] or registry
    return host in _LOCAL_HOSTS


class Session:
    """Requests to one registry host, safe to share between threads."""

    def __init__(self, registry: str, *, insecure: bool, credentials: Credentials | None,
                 log: Callable[[str], None] | None = None,
                 warn: Callable[[str], None] | None = None, retries: int = 5,
                 backoff: float = 0.5, max_delay: float = 30.0,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self.registry = registry
        scheme = "http" if insecure or _is_local(registry) else "https"
        self.base_url = f"{scheme}://{DOCKER_HUB_API if registry == 'docker.io' else registry}"
        self._credentials = credentials
        self._log = log or (lambda line: None)
        self._warn = warn or (lambda line: None)
        self._retries, self._backoff, self._max_delay = retries, backoff, max_delay
        self._timeout = timeout
        self._read_wait = min(_MAX_READ_WAIT, timeout / 4)
        self._reached = False  # whether the registry ever answered this session
        self._tls: ssl.SSLContext | None = None  # made for the first https connection
        self._pool_lock = threading.Lock()
        self._idle: dict[tuple[str, str], list[Route]] = {}
        self._auth_lock = threading.Lock()  # held while a token is fetched: one fetch at a time
        self._challenge: Challenge | None = None
        self._asked: Scopes = frozenset()
        self._tokens: dict[Scopes, Token] = {}

    # -- the public surface ---------------------------------------------------------------

    def request(self, method: str, target: str, *, scope: str,
                headers: Mapping[str, str] | None = None,
                body: bytes | BinaryIO | Iterable[bytes] | None = None,
                expect: Collection[int] = (200,),
                limit: BodyLimit = RESPONSE_LIMIT) -> Response:
        """Send `method` to `target` (a path on the registry, or a URL it gave, such as an
        upload Location), with a token for `scope` (`repository:app:pull,push`; several are
        separated by spaces). A status outside `expect` raises RegistryError with the
        registry's error codes, and a body larger than `limit` raises one too. A file body
        must be seekable or come with a Content-Length; an iterable body is sent chunked, as
        it is made, and never retried."""
        response, _ = self._authorized(method, target, scope, dict(headers or {}), body, False,
                                       limit)
        return self._checked(response, expect)

    def open(self, target: str, *, scope: str) -> BinaryIO:
        """GET `target` as a stream, for blobs too big to hold: read it to the end or close
        it. A connection dropped midway is resumed transparently."""
        return io.BufferedReader(_ResumingBody(self, target, scope), _BLOCK)

    def close(self) -> None:
        """Close the idle connections (those in use close when their response is read)."""
        with self._pool_lock:
            idle, self._idle = self._idle, {}
        for routes in idle.values():
            for route in routes:
                route.connection.close()

    # -- authentication -------------------------------------------------------------------

    def _authorized(self, method: str, target: str, scope: str, headers: dict[str, str],
                    content: bytes | BinaryIO | Iterable[bytes] | None, stream: bool,
                    limit: BodyLimit = RESPONSE_LIMIT) -> tuple[Response, _Stream | None]:
        url = urljoin(self.base_url + "/", target)
        body = _body(content, headers)
        wanted = parse_scopes(scope)
        auth = self._authorization(wanted, fresh=False)
        response, opened = self._exchange(method, url, {**headers, **auth}, body, stream, limit)
        challenge = parse_challenge(response.header("WWW-Authenticate") or "")
        if response.status != 401 or challenge is None or not body.rewindable \
                or (challenge.scheme == "basic" and not _has_password(self._credentials)):
            return response, opened
        with self._auth_lock:
            self._challenge = challenge
            self._asked |= challenge.scopes
        body.rewind()
        auth = self._authorization(wanted, fresh=True)
        return self._exchange(method, url, {**headers, **auth}, body, stream, limit)

    def _authorization(self, wanted: Scopes, fresh: bool) -> dict[str, str]:
        """The Authorization header for a request needing `wanted`, fetching a token if the
        registry wants one and none cached covers it (always, when `fresh`)."""
        credentials = self._credentials
        with self._auth_lock:
            challenge = self._challenge
            if challenge is None:
                return {}
            if challenge.scheme == "basic":
                return _basic(credentials) if _has_password(credentials) else {}
            self._asked |= wanted
            now = time.time()
            if not fresh:
                for scopes, token in self._tokens.items():
                    if wanted <= scopes and token.expires_at - _TOKEN_MARGIN > now:
                        return {"Authorization": f"Bearer {token.value}"}
            token = self._fetch_token(challenge, self._asked)
            self._tokens[self._asked] = token
            return {"Authorization": f"Bearer {token.value}"}

    def _fetch_token(self, challenge: Challenge, scopes: Scopes) -> Token:
        """A token from the realm: GET with Basic credentials (or none), or the OAuth2 POST
        when the credential is an identity token."""
        params = [("service", challenge.service)] if challenge.service else []
        credentials = self._credentials
        if credentials and credentials.identity_token:
            form = params + [("grant_type", "refresh_token"), ("client_id", _CLIENT_ID),
                             ("refresh_token", credentials.identity_token),
                             ("scope", " ".join(render_scopes(scopes)))]
            body = _body(urlencode(form).encode(), {})
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            response, _ = self._exchange("POST", challenge.realm, headers, body, False)
        else:
            query = urlencode(params + [("scope", s) for s in render_scopes(scopes)])
            headers = _basic(credentials) if _has_password(credentials) else {}
            url = challenge.realm + ("&" if "?" in challenge.realm else "?") + query
            response, _ = self._exchange("GET", url, headers, _body(None, {}), False)
        if response.status != 200:
            refused = " (the credentials were refused)" if credentials else ""
            raise RegistryError(f"token server {challenge.realm}: "
                                f"{describe(response.status, response.body)}{refused}",
                                response.status)
        try:
            return parse_token(response.body)
        except ValueError as error:
            raise RegistryError(f"token server {challenge.realm}: {error}") from None

    def _checked(self, response: Response, expect: Collection[int]) -> Response:
        if response.status in expect:
            return response
        message = describe(response.status, response.body)
        if response.status == 401:
            message += (f" (the credentials for {self.registry} were not accepted)"
                        if self._credentials else
                        f" (no credentials for {self.registry}: docker login, or an auths entry "
                        "in config.json)")
        raise RegistryError(message, response.status)

    # -- retries and redirects ------------------------------------------------------------

    def _exchange(self, method: str, url: str, headers: dict[str, str], body: _Body,
                  stream: bool,
                  limit: BodyLimit = RESPONSE_LIMIT) -> tuple[Response, _Stream | None]:
        deadline = time.monotonic() + self._timeout
        what = f"{method} {url}"
        for attempt in itertools.count():
            last = attempt >= self._retries or not body.rewindable
            try:
                response, opened = self._follow(method, url, headers, body, stream, limit,
                                                deadline)
            except _DROPPED as error:
                # A registry that never answered and refuses connections is not there (a wrong
                # host or port): say so now rather than after a minute of retries.
                never = isinstance(error, ConnectionRefusedError) and not self._reached
                reason = _reason(error)
                if last or never:
                    raise RegistryError(f"{what}: {reason}") from None
                if not self._pause(attempt, None, what, reason, deadline):
                    raise RegistryError(f"{what}: {reason} (tried {attempt + 1} times; another "
                                        f"try would pass the registry timeout, "
                                        f"{self._timeout:g}s)") from None
            except OSError as error:
                raise RegistryError(f"{what}: {error}") from None
            else:
                self._reached = True
                if response.status not in _RETRIED_STATUSES or last or not self._pause(
                        attempt, response.header("Retry-After"), what, str(response.status),
                        deadline):
                    return response, opened
            body.rewind()

    def _pause(self, attempt: int, retry_after: str | None, what: str, reason: str,
               deadline: float) -> bool:
        """Wait before try `attempt + 2`, saying so; False, without waiting, when the wait would
        end past `deadline`."""
        delay = _seconds(retry_after)
        if delay is None:
            delay = self._backoff * 2 ** attempt
        delay = min(delay, self._max_delay)
        if time.monotonic() + delay >= deadline:
            return False
        self._warn(f"retrying {what} in {delay:.2g}s ({attempt + 1}/{self._retries}): {reason}")
        time.sleep(delay)
        return True

    def _follow(self, method: str, url: str, headers: dict[str, str], body: _Body,
                stream: bool, limit: BodyLimit,
                deadline: float) -> tuple[Response, _Stream | None]:
        origin = urlsplit(url).netloc
        for _ in range(_MAX_REDIRECTS):
            response, opened = self._send(method, url, headers, body, stream, limit, deadline)
            if response.status not in _REDIRECTS or not response.header("Location"):
                return response, opened
            url = response.location()
            if urlsplit(url).netloc != origin:
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            if response.status == 303:
                method, body = "GET", _body(None, {})
            body.rewind()
        raise RegistryError(f"{method} {url}: more than {_MAX_REDIRECTS} redirects")

    # -- connections ----------------------------------------------------------------------

    def _send(self, method: str, url: str, headers: dict[str, str], body: _Body,
              stream: bool, limit: BodyLimit,
              deadline: float) -> tuple[Response, _Stream | None]:
        """One exchange on a pooled connection, answered before `deadline`. A streamed 200/206
        keeps its connection until its body is read (see `_finish`); any other body is read
        here, up to `limit`."""
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc)
        route = self._connection(key)
        target = route.target(url)
        headers = {"User-Agent": _USER_AGENT, **route.headers, **headers}
        if body.length >= 0 and (body.content is not None or method in ("POST", "PUT", "PATCH")):
            headers["Content-Length"] = str(body.length)
        wait = min(self._read_wait, deadline - time.monotonic())
        if wait <= 0:
            raise TimeoutError(f"no answer within {self._timeout:g}s")
        connection = route.connection
        try:
            reused = connection.sock is not None
            try:
                raw, sock = self._ask(connection, method, target, body, headers, wait)
            except ConnectionError:
                # A kept-alive connection the server has since closed: once more, on a new one.
                if not reused or not body.rewindable:
                    raise
                connection.close()
                body.rewind()
                raw, sock = self._ask(connection, method, target, body, headers, wait)
            except TimeoutError:
                raise TimeoutError(f"timed out after {wait:.2g}s") from None
            self._log(f"{method} {parts.scheme}://{parts.netloc}{parts.path} {raw.status}")
            if stream and raw.status in (200, 206):
                sock.settimeout(self._read_wait)  # the answer came: now each read has its wait
                opened = _Stream(raw, route, key)
                return Response(raw.status, raw.headers, b"", url), opened
            # A HEAD's Content-Length is the size of what a GET would send, not a body.
            data = raw.read() if method == "HEAD" else _read_within(raw, limit, f"{method} {url}")
        except BaseException:
            connection.close()
            raise
        self._release(key, route)
        return Response(raw.status, raw.headers, data, url), None

    @staticmethod
    def _ask(connection: http.client.HTTPConnection, method: str, target: str, body: _Body,
             headers: dict[str, str], wait: float) -> tuple[http.client.HTTPResponse,
                                                         socket.socket]:
        """Send a request and read the head of its answer, each read waiting at most `wait`;
        returns the socket too, which the response keeps reading after a `Connection: close`."""
        connection.timeout = wait
        if connection.sock is not None:
            connection.sock.settimeout(wait)
        connection.request(method, target, body=body.content, headers=headers)
        sock = connection.sock
        return connection.getresponse(), sock

    def _finish(self, opened: _Stream, complete: bool) -> None:
        """Hand back a streamed response's connection: to the pool when its body was read to
        the end, closed when it was abandoned midway."""
        if complete:
            self._release(opened.key, opened.route)
        else:
            opened.route.connection.close()

    def _connection(self, key: tuple[str, str]) -> Route:
        """An idle connection to `key`'s origin, else a new one (through the proxy the
        environment names for it)."""
        with self._pool_lock:
            idle = self._idle.get(key)
            if idle:
                return idle.pop()
        scheme, netloc = key
        if scheme == "https" and self._tls is None:
            self._tls = ssl.create_default_context()  # 30 ms of CPU: not for a plain-http registry
        try:
            return connect(scheme, netloc, timeout=self._read_wait, context=self._tls,
                           blocksize=_BLOCK)
        except ProxyError as error:
            raise RegistryError(str(error)) from None

    def _release(self, key: tuple[str, str], route: Route) -> None:
        """Return a connection whose response was read to the end; a closed one reconnects
        by itself when next used."""
        with self._pool_lock:
            self._idle.setdefault(key, []).append(route)


class _ResumingBody(io.RawIOBase):
    """A blob's GET body. When the connection drops midway, the rest is asked for again
    (`Range: bytes=<read so far>-`), up to the session's retry count, so the reader sees one
    unbroken stream."""

    def __init__(self, session: Session, target: str, scope: str) -> None:
        self._session, self._target, self._scope = session, target, scope
        self._offset = 0
        self._failures = 0
        self._opened: _Stream | None = self._open()

    def _open(self) -> _Stream:
        headers = {"Range": f"bytes={self._offset}-"} if self._offset else {}
        response, opened = self._session._authorized("GET", self._target, self._scope, headers,
                                                     None, True)
        self._session._checked(response, (200, 206))
        assert opened is not None
        content_range = response.header("Content-Range") or ""
        if response.status == 206 and not content_range.startswith(f"bytes {self._offset}-"):
            self._session._finish(opened, complete=False)
            raise RegistryError(f"GET {self._target}: asked for the bytes from {self._offset} "
                                f"on, the registry sent {content_range or 'another range'}")
        skip = self._offset if response.status == 200 else 0  # a server that ignored Range
        while skip and (chunk := opened.raw.read(min(_BLOCK, skip))):
            skip -= len(chunk)
        return opened

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:
        while self._opened is not None:
            try:
                count = self._opened.raw.readinto(buffer)
                if count == 0 and len(buffer) and self._opened.raw.length:
                    # http.client reports a body cut short of its Content-Length as an end.
                    raise http.client.IncompleteRead(b"", self._opened.raw.length)
            except _DROPPED as error:
                self._session._finish(self._opened, complete=False)
                self._opened = None
                self._failures += 1
                what = f"GET {self._target}"
                reason = f"{_reason(error)} after {self._offset} bytes"
                if self._failures > self._session._retries or not self._session._pause(
                        self._failures - 1, None, what, reason,
                        time.monotonic() + self._session._timeout):
                    raise RegistryError(f"{what}: {reason}") from None
                self._opened = self._open()
                continue
            if count == 0 and len(buffer):
                self._session._finish(self._opened, complete=True)
                self._opened = None
            self._offset += count
            return count
        return 0

    def close(self) -> None:
        if self._opened is not None:
            self._session._finish(self._opened, complete=False)
            self._opened = None
        super().close()


@dataclass(frozen=True)
class _Stream:
    """A response whose body is still on its connection."""

    raw: http.client.HTTPResponse
    route: Route
    key: tuple[str, str]


def _has_password(credentials: Credentials | None) -> bool:
    return bool(credentials and credentials.username)


def _basic(credentials: Credentials) -> dict[str, str]:
    pair = f"{credentials.username}:{credentials.password}".encode()
    return {"Authorization": "Basic " + base64.b64encode(pair).decode()}


def _read_within(raw: http.client.HTTPResponse, limit: BodyLimit, subject: str) -> bytes:
    """The body, read no further than one byte past `limit` (a Content-Length past it fails
    before any of it is read)."""
    length = raw.getheader("Content-Length") or ""
    if length.isdigit() and int(length) > limit.size:
        raise limit.exceeded(f"{subject}: {int(length)} bytes")
    data = raw.read(limit.size + 1)
    if len(data) > limit.size:
        raise limit.exceeded(subject)
    return data


def _seconds(retry_after: str | None) -> float | None:
    """Retry-After as seconds from now: a number, or an HTTP date."""
    if not retry_after:
        return None
    try:
        return max(0.0, float(retry_after))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(retry_after).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _reason(error: BaseException) -> str:
    """The class of a dropped connection's error with its message, which is often empty
    (RemoteDisconnected, a bare TimeoutError)."""
    if isinstance(error, TimeoutError) and str(error):
        return str(error)
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
