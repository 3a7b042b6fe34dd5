"""The Docker Engine API over its unix socket: what the harness asks of the daemon for every
case (load, inspect, create, export, remove) without starting a docker CLI process each time
(six per case, 50-100 ms each on a busy machine). Builds still go through the CLI: BuildKit
needs its session."""
from __future__ import annotations

import http.client
import json
import os
import socket
from urllib.parse import quote, urlencode


def socket_path() -> str:
    host = os.environ.get("DOCKER_HOST", "")
    return host[len("unix://"):] if host.startswith("unix://") else "/var/run/docker.sock"


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


class ApiError(RuntimeError):
    """The daemon answered with an error status."""


def request(method: str, path: str, query: dict | None = None, body=None,
            headers: dict | None = None, timeout: float = 300) -> http.client.HTTPResponse:
    """One request on a connection of its own; the response is open for reading (a stream
    for export and load). An error status raises ApiError with the daemon's message."""
    connection = _UnixConnection(socket_path(), timeout)
    target = path + ("?" + urlencode(query) if query else "")
    connection.request(method, target, body=body, headers=headers or {})
    response = connection.getresponse()
    if response.status >= 400:
        text = response.read().decode(errors="replace")
        connection.close()
        try:
            text = json.loads(text).get("message", text)
        except ValueError:
            pass
        raise ApiError(f"{method} {path}: {response.status} {text.strip()}")
    return response


def call(method: str, path: str, query: dict | None = None, payload: dict | None = None,
         timeout: float = 300):
    """A request whose answer is one JSON document (or nothing)."""
    body = json.dumps(payload).encode() if payload is not None else None
    headers = {"Content-Type": "application/json"} if payload is not None else {}
    with request(method, path, query, body, headers, timeout) as response:
        data = response.read()
    return json.loads(data) if data.strip() else None


def name(reference: str) -> str:
    """An image name or container ID as one path segment."""
    return quote(reference, safe="")
