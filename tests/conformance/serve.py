"""A case's `serve` directory over HTTP on 127.0.0.1 while both builders build it, for ADD of
a URL: its address is the build arg SERVER (left out of Docker's cache key: the port changes
from run to run), and every file's Last-Modified is the same fixed time in every run, so Docker's
cached result stays comparable."""
from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SERVER_ARG = "SERVER"
MTIME = 1577880000  # 2020-01-01 12:00:00 UTC: the Last-Modified of every served file


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        """No request log on stderr."""


@contextlib.contextmanager
def served(directory: Path) -> Iterator[str]:
    """Serve `directory` (its files' mtimes set to MTIME) until the block ends; yields its URL."""
    for parent, _, names in os.walk(directory):
        for name in names:
            os.utime(os.path.join(parent, name), (MTIME, MTIME), follow_symlinks=False)
    server = ThreadingHTTPServer(("127.0.0.1", 0),
                                 functools.partial(_Quiet, directory=str(directory)))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
