"""The build log: BuildKit-shaped plain lines for CI logs, or only the image ID when quiet.

Everything goes to stderr, so `-o -` can stream the tarball on stdout.
"""
from __future__ import annotations

import sys
import time
from typing import TextIO


class Log:
    """Numbered steps (`#3 [build 2/5] COPY . /app`, `#3 DONE 0.1s`), warnings kept for the end."""

    def __init__(self, mode: str = "plain", stream: TextIO | None = None) -> None:
        self.quiet = mode == "quiet"
        self.stream = stream or sys.stderr
        self.start = time.monotonic()
        self.count = 0
        self.warnings: list[str] = []
        self._open: dict[int, float] = {}
        self._partial: dict[int, bytes] = {}

    def _print(self, text: str) -> None:
        if not self.quiet:
            print(text, file=self.stream, flush=True)

    def step(self, title: str) -> int:
        self.count += 1
        self._open[self.count] = time.monotonic()
        self._print(f"#{self.count} {title}")
        return self.count

    def done(self, number: int, note: str = "") -> None:
        if number in self._partial:
            self.output(number, b"\n")
        elapsed = time.monotonic() - self._open.pop(number, time.monotonic())
        self._print(f"#{number} {note + ' ' if note else ''}DONE {elapsed:.1f}s")

    def cached(self, number: int) -> None:
        """A step whose result was reused, as BuildKit's plain log says it."""
        self._open.pop(number, None)
        self._print(f"#{number} CACHED")

    def info(self, number: int, text: str) -> None:
        self._print(f"#{number} {text}")

    def output(self, number: int, chunk: bytes) -> None:
        """A running step's output, line-prefixed with its step number; a line split across
        chunks is held until its end arrives (or the step ends)."""
        *lines, rest = (self._partial.pop(number, b"") + chunk).split(b"\n")
        for line in lines:
            self._print(f"#{number} {line.decode(errors='replace')}")
        if rest:
            self._partial[number] = rest

    def note(self, text: str) -> None:
        self._print(text)

    def warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)

    def finish(self) -> None:
        for text in self.warnings:
            print(f"WARNING: {text}", file=self.stream, flush=True)
