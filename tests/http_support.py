"""HTTP servers on 127.0.0.1 for the ADD <url> and proxy tests: a file server that answers
conditional requests, hostile answers, and a forwarding proxy that counts what it forwards."""
from __future__ import annotations

import http.client
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from tests.registry_support import QuietHandler, serve

LAST_MODIFIED = "Wed, 01 Jan 2020 12:00:00 GMT"
LAST_MODIFIED_EPOCH = 1577880000


@dataclass
class Served:
    """A file the server holds; `requests` lists (path, status) of what it answered."""

    files: dict[str, bytes]
    requests: list[tuple[str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def statuses(self, path: str) -> list[int]:
        with self.lock:
            return [status for seen, status in self.requests if seen == path]


class FileHandler(QuietHandler):
    """Files with a fixed Last-Modified and an ETag of their content; 304 to a matching
    If-None-Match. Hostile paths: /endless (a body without end), /short (a Content-Length
    larger than the body), /big-length (one past any limit, announced), /huge-header, /loop (redirects to itself), /to-file (redirects to
    file://), /flaky (503 twice, then a file), /silent (no answer for 3 s). Paths under /undated/
    are answered without Last-Modified."""

    def do_GET(self) -> None:
        served: Served = self.server.served
        path = urlsplit(self.path).path
        status = self._answer(path, served)
        with served.lock:
            served.requests.append((path, status))

    def _answer(self, path: str, served: Served) -> int:
        if path == "/endless":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            try:
                while True:
                    self.wfile.write(b"x" * 65536)
            except OSError:
                return 200
        if path == "/short":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"only this")
            self.close_connection = True
            return 200
        if path == "/big-length":
            self.send_response(200)
            self.send_header("Content-Length", str(1 << 40))
            self.end_headers()
            self.wfile.write(b"x" * 65536)
            self.close_connection = True
            return 200
        if path == "/huge-header":
            self.send_response(200)
            self.send_header("X-Big", "y" * 100_000)
            self.end_headers()
            return 200
        if path in ("/loop", "/to-file"):
            self.send_response(302)
            self.send_header("Location", "/loop" if path == "/loop" else "file:///etc/passwd")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return 302
        if path == "/silent":
            time.sleep(3)
            return 0
        if path == "/flaky" and len(served.statuses("/flaky")) < 2:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return 503
        body = served.files.get(path)
        if body is None:
            self.send_error(404)
            return 404
        etag = f'"{hash(body) & 0xffffffff:x}"'
        if self.headers.get("If-None-Match") == etag:
            self.send_response(304)
            self.send_header("ETag", etag)
            self.end_headers()
            return 304
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        if not path.startswith("/undated/"):
            self.send_header("Last-Modified", LAST_MODIFIED)
        self.send_header("ETag", etag)
        self.end_headers()
        self.wfile.write(body)
        return 200


def file_server(files: dict[str, bytes]):
    """A FileHandler server and what it serves (and saw)."""
    served = Served(files)
    return serve(FileHandler, served=served), served


class ProxyHandler(QuietHandler):
    """A forward proxy for plain http: any host is taken to be 127.0.0.1 (so names only it can
    resolve, such as `files.invalid`, prove a request went through it); counts what it
    forwards in `self.server.forwarded`."""

    def _forward(self) -> None:
        parts = urlsplit(self.path)
        with self.server.lock:
            self.server.forwarded.append(f"{self.command} {parts.hostname}{parts.path}")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        upstream = http.client.HTTPConnection("127.0.0.1", parts.port or 80, timeout=30)
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in ("proxy-authorization", "connection")}
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        upstream.request(self.command, target, body=body, headers=headers)
        answer = upstream.getresponse()
        data = answer.read()
        self.send_response(answer.status)
        for name, value in answer.getheaders():
            if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        upstream.close()

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _forward

    def do_CONNECT(self) -> None:
        """A tunnel to 127.0.0.1 at the port asked for: bytes both ways until either closes."""
        host, _, port = self.path.rpartition(":")
        with self.server.lock:
            self.server.forwarded.append(f"CONNECT {host}")
        upstream = socket.create_connection(("127.0.0.1", int(port)), timeout=30)
        self.send_response(200, "Connection established")
        self.end_headers()
        sockets = [self.connection, upstream]
        try:
            while True:
                readable, _, _ = select.select(sockets, [], [], 30)
                if not readable:
                    break
                for ready in readable:
                    data = ready.recv(65536)
                    if not data:
                        return
                    (upstream if ready is self.connection else self.connection).sendall(data)
        finally:
            upstream.close()
            self.close_connection = True


def proxy_server():
    return serve(ProxyHandler, forwarded=[], lock=threading.Lock())
