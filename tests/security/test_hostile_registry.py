"""Builds FROM a hostile registry: a small HTTP server on 127.0.0.1 that sends what a broken or
malicious registry might. Each build must fail with a clear message naming the image, a non-zero
status, no traceback and no output, having read no more than the limits allow."""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from layers.image import sha256_digest
from layers.platform import host_platform
from layers.registry.mediatypes import OCI_MANIFEST
from tests.registry_support import QuietHandler, serve, shut_down
from tests.support import pybuild

HUGE = 300 << 20  # what the hostile server offers to send: far past every limit
_CHUNK = b"x" * (64 << 10)
_CONFIG = b'{"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}'


def _manifest(config_digest: str, config_size: int) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                  "digest": config_digest, "size": config_size},
                       "layers": []}).encode()


@dataclass
class Sent:
    """What the server managed to write before the client hung up, per repository."""

    bytes: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, name: str, count: int) -> None:
        with self.lock:
            self.bytes[name] = self.bytes.get(name, 0) + count


class Hostile(QuietHandler):
    """`/v2/<name>/...`: the name says how the server misbehaves."""

    def do_GET(self) -> None:
        parts = self.path.split("/")
        if self.path == "/v2/":
            return self._send(200, b"{}")
        name, kind = parts[2], parts[3]
        if name == "silent":
            self.server.stop.wait(60)  # accept, never answer (until the test is over)
            self.close_connection = True
            return None
        if name == "loop":
            self.send_response(302)
            self.send_header("Location", self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        if kind == "manifests":
            if name == "junk":
                return self._send(200, b"{not json at all", OCI_MANIFEST)
            if name == "deep":  # nested past Python's recursion limit, within the size cap
                return self._send(200, b"[" * 100_000 + b"]" * 100_000, OCI_MANIFEST)
            if name == "traversal":
                return self._send(200, _manifest("sha256:../../x", 10), OCI_MANIFEST)
            if name == "hugeconfig":
                return self._send(200, _manifest("sha256:" + "ab" * 32, HUGE), OCI_MANIFEST)
            if name == "longconfig":  # says the config is small, sends it forever
                return self._send(200, _manifest(sha256_digest(_CONFIG), len(_CONFIG)),
                                  OCI_MANIFEST)
            if name in ("huge", "hugelength"):
                return self._stream(name, announce=name == "hugelength")
        if kind == "blobs" and name == "longconfig":
            return self._stream(name, announce=False)
        return self._send(404, b'{"errors": [{"code": "NAME_UNKNOWN"}]}')

    def _send(self, status: int, body: bytes, media_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", media_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, name: str, announce: bool) -> None:
        """HUGE bytes, announced with a Content-Length or chunked, until the client hangs up."""
        self.send_response(200)
        self.send_header("Content-Type", OCI_MANIFEST)
        if announce:
            self.send_header("Content-Length", str(HUGE))
        else:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.close_connection = True
        chunk = _CHUNK if announce else b"%x\r\n%s\r\n" % (len(_CHUNK), _CHUNK)
        try:
            for _ in range(HUGE // len(_CHUNK)):
                if self.server.stop.is_set():
                    return
                self.wfile.write(chunk)
                self.server.sent.add(name, len(_CHUNK))
        except OSError:
            return


@pytest.fixture(scope="module")
def hostile() -> Iterator[ThreadingHTTPServer]:
    server = serve(Hostile, stop=threading.Event(), sent=Sent())
    yield server
    server.stop.set()
    shut_down(server)


def build_from(tmp_path: Path, server: ThreadingHTTPServer, name: str, *options: str):
    address = f"127.0.0.1:{server.server_address[1]}"
    (tmp_path / "Dockerfile").write_text(f"FROM {address}/{name}:1\n")
    return pybuild("--progress", "plain", "--cache-dir", str(tmp_path / "cache"),
                   "-o", str(tmp_path / "image.tar"), *options, str(tmp_path), timeout=120)


# name, what the error says, after the image's name
CASES = [
    ("huge", "GET http://{address}/v2/huge/manifests/1: larger than 4 MiB, the limit for "
             "manifests and indexes"),
    ("hugelength", f"manifests/1: {HUGE} bytes: larger than 4 MiB, the limit for manifests and "
                   "indexes"),
    ("hugeconfig", f"config sha256:{'ab' * 32}: {HUGE} bytes: larger than 8 MiB, the limit for "
                   "image configs"),
    ("longconfig", f"more than the {len(_CONFIG)} bytes its descriptor says"),
    ("junk", "the manifest is not a JSON object"),
    ("deep", "the manifest is not a JSON object"),
    ("traversal", "invalid descriptor in the manifest: {'mediaType': "
                  "'application/vnd.oci.image.config.v1+json', 'digest': 'sha256:../../x'"),
    ("loop", "GET http://{address}/v2/loop/manifests/1: more than 5 redirects"),
]


@pytest.mark.parametrize("name,message", CASES, ids=[case[0] for case in CASES])
def test_a_hostile_registry_fails_the_build_clearly(tmp_path, hostile, name, message) -> None:
    address = f"127.0.0.1:{hostile.server_address[1]}"
    result = build_from(tmp_path, hostile, name)
    assert result.returncode == 1, result.stderr
    assert f"Dockerfile:1: cannot pull {address}/{name}:1 for {host_platform()}: " in result.stderr
    assert message.replace("{address}", address) in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "image.tar").exists()
    # Reading stopped at the limit: what the server wrote is the limit plus the socket buffers.
    assert hostile.sent.bytes.get(name, 0) < 32 << 20


def test_a_registry_that_never_answers_fails_within_the_timeout(tmp_path, hostile) -> None:
    started = time.monotonic()
    result = build_from(tmp_path, hostile, "silent", "--registry-timeout", "3")
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    assert elapsed < 3 + 5  # the bound, and Python's start-up with room to spare
    retries = [line for line in result.stderr.splitlines()
               if line.startswith("WARNING: retrying GET http://")]
    assert retries and all("/v2/silent/manifests/1 in " in line and
                           line.endswith(": timed out after 0.75s") for line in retries), \
        result.stderr
    assert "another try would pass the registry timeout, 3s)" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_registry_timeout_comes_from_the_environment_too(tmp_path, hostile) -> None:
    address = f"127.0.0.1:{hostile.server_address[1]}"
    (tmp_path / "Dockerfile").write_text(f"FROM {address}/silent:1\n")
    result = pybuild("--progress", "plain", "--cache-dir", str(tmp_path / "cache"), str(tmp_path),
                     env={"PYBUILD_REGISTRY_TIMEOUT": "1"}, timeout=60)
    assert result.returncode == 1 and "timed out after 0.25s" in result.stderr, result.stderr


@pytest.mark.parametrize("value", ["0", "-5", "soon", "inf", "nan"])
def test_a_registry_timeout_that_is_not_a_positive_number_is_a_usage_error(tmp_path,
                                                                          value) -> None:
    result = pybuild("--registry-timeout", value, str(tmp_path), timeout=60)
    assert result.returncode == 2
    assert "--registry-timeout" in result.stderr and "not a positive number" in result.stderr
