"""A real registry for the registry client's tests, and what stands around it: a token server,
a proxy that counts requests and injects faults, and small images to push.

The registry is Debian's `docker-registry` (distribution 2.8), started per test on a free port of
127.0.0.1 with a generated config and storage in a temp dir, and killed afterwards. Without the
binary the tests skip, except under CI=true, where that fails them (`support.require`).

Token auth follows distribution's token spec: the registry trusts JWTs whose `x5c` header carries
a certificate found in its `rootcertbundle`; the token server here signs RS256 JWTs with
`openssl dgst` (no Python crypto dependency), granting `alice:secret` pull and push and anyone
else pull only.
"""
from __future__ import annotations

import base64
import hashlib
import http.client
import io
import json
import os
import shutil
import socket
import ssl
import subprocess
import tarfile
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from layers.compression import Compression, compress_file
from layers.image import ImageConfig
from layers.layerblob import LayerBlob
from layers.registry.transport import Session
from tests.support import require

REGISTRY_BINARY = "/usr/bin/docker-registry"
SERVICE = "test-registry"
ISSUER = "test-issuer"
USER, PASSWORD = "alice", "s3cr3t-Pa55word"
REFRESH_TOKEN = "alice-refresh-token"
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length",
               "proxy-connection", "te", "upgrade"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class QuietHandler(BaseHTTPRequestHandler):
    """Kept-alive HTTP/1.1, as registries speak it, and no request log on stderr."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        """Quiet."""


def serve(handler: type[BaseHTTPRequestHandler], **attributes) -> ThreadingHTTPServer:
    """An HTTP server on a free port of 127.0.0.1, served by a daemon thread; `attributes` are
    set on it for the handler to find (`self.server.<name>`)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    for name, value in attributes.items():
        setattr(server, name, value)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


def shut_down(server: ThreadingHTTPServer) -> None:
    server.shutdown()
    server.server_close()


# -- the registry ------------------------------------------------------------------------

class Registry:
    """One docker-registry process on 127.0.0.1, storing in its own temp dir."""

    def __init__(self, auth: str = "", relative_urls: bool = False) -> None:
        require(os.access(REGISTRY_BINARY, os.X_OK), "docker-registry (Debian package)")
        self.dir = Path(tempfile.mkdtemp(prefix="pybuild-registry-"))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        config = self.dir / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log: {level: warn, accesslog: {disabled: true}}\n"
            f"storage: {{filesystem: {{rootdirectory: {self.dir / 'data'}}},"
            " delete: {enabled: true}, maintenance: {uploadpurging: {enabled: false}}}\n"
            f"http: {{addr: '{self.address}', secret: test-secret,"
            f" relativeurls: {str(relative_urls).lower()}}}\n" + auth)
        self._log = open(self.dir / "registry.log", "wb")
        self.process = subprocess.Popen([REGISTRY_BINARY, "serve", str(config)],
                                        stdout=self._log, stderr=subprocess.STDOUT)
        self._wait()

    def _wait(self) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                connection = http.client.HTTPConnection(self.address, timeout=1)
                connection.request("GET", "/v2/")
                connection.getresponse().read()
                connection.close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"docker-registry did not start: {self.log()}")

    def log(self) -> str:
        return (self.dir / "registry.log").read_text(errors="replace")[-3000:]

    def blob_path(self, digest: str) -> Path:
        hexdigest = digest.partition(":")[2]
        return (self.dir / "data/docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest
                / "data")

    def stop(self) -> None:
        close_sessions()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def htpasswd_auth(directory: Path) -> str:
    """The `auth:` section for htpasswd (bcrypt) with alice's password."""
    line = subprocess.run(["htpasswd", "-Bbn", USER, PASSWORD], check=True,
                          capture_output=True).stdout
    path = directory / "htpasswd"
    path.write_bytes(line)
    return f"auth: {{htpasswd: {{realm: test-realm, path: {path}}}}}\n"


@pytest.fixture
def registry() -> Iterator[Registry]:
    server = Registry()
    yield server
    server.stop()


_sessions: list[Session] = []


def session(address: str, lines: list[str] | None = None, **options) -> Session:
    """A session with fast retries, logging into `lines`; closed when a registry stops."""
    options.setdefault("credentials", None)
    hear = None if lines is None else lines.append
    client = Session(address, insecure=False, log=hear, warn=hear, backoff=0.01, **options)
    _sessions.append(client)
    return client


def close_sessions() -> None:
    while _sessions:
        _sessions.pop().close()


def unique_repository(stem: str = "app") -> str:
    return f"{stem}-{uuid.uuid4().hex[:8]}"


# -- a token server --------------------------------------------------------------------

@dataclass(frozen=True)
class SigningKey:
    key: Path
    certificate: Path
    x5c: str  # base64 DER of the certificate, the JWT header's chain

    def sign(self, claims: dict) -> str:
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        signing_input = f"{_b64url(json.dumps(header).encode())}." \
                        f"{_b64url(json.dumps(claims).encode())}"
        signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key)],
                                   input=signing_input.encode(), capture_output=True,
                                   check=True).stdout
        return f"{signing_input}.{_b64url(signature)}"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture(scope="session")
def signing_key(tmp_path_factory) -> SigningKey:
    require(shutil.which("openssl") is not None, "openssl")
    directory = tmp_path_factory.mktemp("token-key")
    key, certificate = directory / "key.pem", directory / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", f"/CN={ISSUER}", "-keyout", str(key), "-out", str(certificate)],
                   check=True, capture_output=True)
    der = ssl.PEM_cert_to_DER_cert(certificate.read_text())
    return SigningKey(key, certificate, base64.b64encode(der).decode())


@dataclass(frozen=True)
class TokenRequest:
    user: str  # "" when anonymous
    scopes: tuple[str, ...]
    method: str


class TokenServer:
    """Grants `alice` (password, or identity token through the OAuth2 POST) pull and push,
    anyone else pull; answers with `token`, or only `access_token` when asked to."""

    def __init__(self, key: SigningKey, field: str = "token") -> None:
        self.key, self.field = key, field
        self.requests: list[TokenRequest] = []
        self.issued: list[str] = []
        self._server = serve(_TokenHandler, token_server=self)
        self.realm = f"http://127.0.0.1:{self._server.server_port}/token"

    def auth_section(self) -> str:
        return (f"auth: {{token: {{realm: '{self.realm}', service: {SERVICE},"
                f" issuer: {ISSUER}, rootcertbundle: {self.key.certificate}}}}}\n")

    def answer(self, user: str | None, scopes: list[str], method: str) -> tuple[int, bytes]:
        if user is None:
            return 401, b'{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}'
        self.requests.append(TokenRequest(user, tuple(scopes), method))
        allowed = {"pull", "push"} if user == USER else {"pull"}
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            granted = [a for a in actions.split(",") if a in allowed]
            if granted:
                access.append({"type": kind, "name": name, "actions": granted})
        now = int(time.time())
        token = self.key.sign({"iss": ISSUER, "sub": user, "aud": SERVICE, "exp": now + 300,
                               "nbf": now - 10, "iat": now, "jti": uuid.uuid4().hex,
                               "access": access})
        self.issued.append(token)
        return 200, json.dumps({self.field: token, "expires_in": 300}).encode()

    def stop(self) -> None:
        shut_down(self._server)


class _TokenHandler(QuietHandler):
    def do_GET(self) -> None:
        query = parse_qs(urlsplit(self.path).query)
        self._reply(*self.server.token_server.answer(self._user(), query.get("scope", []), "GET"))

    def do_POST(self) -> None:
        form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
        ok = form.get("grant_type") == ["refresh_token"] and \
            form.get("refresh_token") == [REFRESH_TOKEN]
        scopes = form.get("scope", [""])[0].split()
        self._reply(*self.server.token_server.answer(USER if ok else None, scopes, "POST"))

    def _user(self) -> str | None:
        """The Basic user, "" when anonymous, None for wrong credentials."""
        header = self.headers.get("Authorization")
        if not header:
            return ""
        user, _, password = base64.b64decode(header.removeprefix("Basic ")).decode() \
            .partition(":")
        return user if (user, password) == (USER, PASSWORD) else None

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def token_registry(signing_key) -> Iterator[tuple[Registry, TokenServer]]:
    tokens = TokenServer(signing_key)
    server = Registry(tokens.auth_section())
    yield server, tokens
    server.stop()
    tokens.stop()


# -- a proxy that counts and breaks things -----------------------------------------------

@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Fault:
    """`kind` for the next `times` requests matching: a status such as "429" or "503" sent
    instead of forwarding; "drop": the connection closed halfway through the answer's body;
    "lose-answer": the request forwarded, then the connection closed with no answer;
    "bad-digest": a wrong Docker-Content-Digest in the answer."""

    method: str
    path_contains: str
    kind: str
    times: int = 1


class Proxy:
    """An HTTP proxy in front of a registry, on its own port of 127.0.0.1: it records every
    request and applies the faults it is given."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.seen: list[Seen] = []
        self.faults: list[Fault] = []
        self._lock = threading.Lock()
        self._server = serve(_ProxyHandler, proxy=self)
        self.address = f"127.0.0.1:{self._server.server_port}"

    def fault(self, method: str, path_contains: str, kind: str, times: int = 1) -> None:
        with self._lock:
            self.faults.append(Fault(method, path_contains, kind, times))

    def take_fault(self, method: str, path: str) -> str | None:
        with self._lock:
            for fault in self.faults:
                if fault.times and fault.method == method and fault.path_contains in path:
                    fault.times -= 1
                    return fault.kind
        return None

    def record(self, seen: Seen) -> None:
        with self._lock:
            self.seen.append(seen)

    def requests(self, method: str, path_contains: str = "") -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.method == method and path_contains in s.path]

    def stop(self) -> None:
        shut_down(self._server)


class _ProxyHandler(QuietHandler):
    def _forward(self) -> None:
        proxy: Proxy = self.server.proxy
        body = self._body()
        proxy.record(Seen(self.command, self.path, dict(self.headers.items())))
        fault = proxy.take_fault(self.command, self.path) or ""
        if fault.isdigit():
            code = {"429": "TOOMANYREQUESTS", "503": "UNAVAILABLE"}.get(fault, "INJECTED")
            message = json.dumps({"errors": [{"code": code, "message": "injected"}]})
            self.send_response(int(fault))
            self.send_header("Retry-After", "0")
            self.send_header("Content-Length", str(len(message)))
            self.end_headers()
            self.wfile.write(message.encode())
            return
        upstream = http.client.HTTPConnection(proxy.upstream, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        upstream.request(self.command, self.path, body=body, headers=headers)
        response = upstream.getresponse()
        data = response.read()
        upstream.close()
        if fault == "lose-answer":
            self._hang_up()
            return
        self.send_response(response.status)
        for name, value in response.getheaders():
            if fault == "bad-digest" and name.lower() == "docker-content-digest":
                value = "sha256:" + "0" * 64
            if name.lower() not in _HOP_BY_HOP:
                self.send_header(name, value)
        length = response.getheader("Content-Length") if self.command == "HEAD" else len(data)
        self.send_header("Content-Length", str(length or 0))
        self.end_headers()
        if fault == "drop":
            self.wfile.write(data[:len(data) // 2])
            self._hang_up()
            return
        self.wfile.write(data)

    def _body(self) -> bytes:
        """The request body, by its Content-Length or, sent chunked, chunk by chunk."""
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0], 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass  # trailers
        return b"".join(chunks)

    def _hang_up(self) -> None:
        self.wfile.flush()
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward


@pytest.fixture
def proxy(registry) -> Iterator[Proxy]:
    server = Proxy(registry.address)
    yield server
    server.stop()


# -- images to push --------------------------------------------------------------------

@dataclass(frozen=True)
class SampleImage:
    config: bytes
    layers: tuple[LayerBlob, ...]
    tars: tuple[bytes, ...]  # each layer's uncompressed tar
    diff_ids: tuple[str, ...]


def layer_tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(content), 1_700_000_000, 0o644
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


EVERY_COMPRESSION = (Compression.GZIP, Compression.ZSTD, Compression.NONE)


def make_image(directory: Path, compressions: tuple[Compression, ...] = EVERY_COMPRESSION, *,
               salt: str = "", architecture: str = "amd64", docker: bool = False) -> SampleImage:
    """An image of one small layer per compression; `salt` makes its blobs unique."""
    directory.mkdir(parents=True, exist_ok=True)
    layers, tars = [], []
    for number, compression in enumerate(compressions):
        tar = layer_tar({f"layer{number}/hello.txt": f"layer {number} {salt}\n".encode() * 300,
                         f"layer{number}/noise.bin": hashlib.sha512(salt.encode()).digest()})
        source = directory / f"layer{number}.tar"
        source.write_bytes(tar)
        blob = directory / f"layer{number}.{compression.value}"
        written = compress_file(str(source), str(blob), compression)
        media_type = compression.docker_media_type if docker else compression.media_type
        layers.append(LayerBlob(written.digest, written.size, media_type,
                                lambda path=blob: open(path, "rb")))
        tars.append(tar)
    diff_ids = tuple("sha256:" + hashlib.sha256(tar).hexdigest() for tar in tars)
    config = ImageConfig(diff_ids=diff_ids, architecture=architecture).to_bytes()
    return SampleImage(config, tuple(layers), tuple(tars), diff_ids)


def write_docker_config(directory: Path, config: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    return directory
