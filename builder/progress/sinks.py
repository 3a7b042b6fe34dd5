"""The build log: the builder reports through `Log`, which stamps each report as an event
(builder/progress/events.py) and hands it to the sinks a build was given: BuildKit-shaped plain
lines for CI logs, nothing but the image ID when quiet, one JSON object per line, a live terminal
view.

Everything goes to stderr, so `-o -` can stream the tarball on stdout.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from dataclasses import asdict
from typing import TextIO

from builder.progress.events import (CANCELED, BuildWarning, Event, Note, Sink, StepCached,
                                     StepDone, StepFailed, StepInfo, StepLayer, StepMissed,
                                     StepOutput, StepProgress, StepStarted)

# The fastest a transfer's progress reaches the sinks: a view redraws a few times a second, and
# a JSON follower wants a handful of lines, not one per chunk.
PROGRESS_INTERVAL = 0.1

# Every report goes to the sinks under this lock (stages built at the same time report from their
# threads). It is held across fork(): no thread is then half-way through writing a line, so a
# sandbox child, which writes only with os.write and never logs, can find no stream's lock taken
# by a thread that does not exist in it.
_REPORTING = threading.RLock()
os.register_at_fork(before=_REPORTING.acquire, after_in_parent=_REPORTING.release,
                    after_in_child=_REPORTING.release)


def shown(text: str) -> str:
    """Text as a log shows it: the bytes of a file name that are not UTF-8 (lone surrogates in
    Python, which no UTF-8 stream or JSON reader takes) as `\\xNN`, as `ls -b` shows them."""
    if text.isascii():
        return text
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate no file name makes (from a \\u escape in JSON)
        return text.encode("utf-8", "backslashreplace").decode()


def last_words(message: str, progress: str, event: str) -> None:
    """A failed command's final report on stderr: an `ERROR:` line, or under `--progress json` an
    `event` object, so that a reader of the JSON stream sees the failure as an event too."""
    message = shown(message)
    if progress == "json":
        print(json.dumps({"event": event, "error": message}), file=sys.stderr)
    else:
        print(f"ERROR: {message}", file=sys.stderr)


class Log:
    """Numbered steps, their output split into lines, warnings kept for the end; each step
    remembers the thread that opened it (a canceled stage's steps are its thread's)."""

    def __init__(self, *sinks: Sink) -> None:
        self.sinks = list(sinks)
        self.start = time.monotonic()
        self.count = 0
        self.warnings: list[str] = []
        self._open: dict[int, tuple[float, int]] = {}  # step -> (started, its thread)
        self._partial: dict[int, bytes] = {}
        self._reported: dict[int, float] = {}

    def add_sink(self, sink: Sink) -> None:
        """One more receiver of the events from now on (the build's own step recorder)."""
        self.sinks.append(sink)

    def _emit(self, event: Event) -> None:
        for sink in self.sinks:
            sink.emit(event)

    def _now(self) -> float:
        return time.monotonic() - self.start

    def step(self, title: str, stage: str | None = None) -> int:
        with _REPORTING:
            self.count += 1
            at = self._now()
            self._open[self.count] = at, threading.get_ident()
            self._emit(StepStarted(self.count, shown(title), at, stage))
            return self.count

    def done(self, number: int) -> None:
        with _REPORTING:
            self._flush(number)
            at = self._now()
            self._emit(StepDone(number, at, at - self._started(number, at)))

    def failed(self, number: int, error: str) -> None:
        with _REPORTING:
            self._flush(number)
            at = self._now()
            self._emit(StepFailed(number, shown(error), at, at - self._started(number, at)))

    def canceled(self, number: int) -> None:
        """A step stopped because another stage failed (BuildKit's `#5 CANCELED`)."""
        self.failed(number, CANCELED)

    def cached(self, number: int) -> None:
        """A step whose result was reused, as BuildKit's plain log says it."""
        with _REPORTING:
            self._open.pop(number, None)
            self._emit(StepCached(number, self._now()))

    def missed(self, number: int, reason: str) -> None:
        with _REPORTING:
            self._emit(StepMissed(number, shown(reason), self._now()))

    def info(self, number: int, text: str) -> None:
        with _REPORTING:
            self._emit(StepInfo(number, shown(text), self._now()))

    def layer(self, number: int, diff_id: str, size: int) -> None:
        with _REPORTING:
            self._emit(StepLayer(number, diff_id, size, self._now()))

    def output(self, number: int, chunk: bytes) -> None:
        """A running step's output, a line at a time; a line split across chunks is held until
        its end arrives (or the step ends)."""
        with _REPORTING:
            *lines, rest = (self._partial.pop(number, b"") + chunk).split(b"\n")
            at = self._now()
            for line in lines:
                self._emit(StepOutput(number, line.decode(errors="replace"), at))
            if rest:
                self._partial[number] = rest

    def progress(self, number: int, done: int, total: int | None,
                 files: int | None = None) -> None:
        """A transfer's bytes so far. Transfers call this for every chunk, from their worker
        threads: the sinks get at most one report per PROGRESS_INTERVAL, and the last one."""
        with _REPORTING:
            at = self._now()
            last = self._reported.get(number)
            if done != total and last is not None and at - last < PROGRESS_INTERVAL:
                return
            self._reported[number] = at
            self._emit(StepProgress(number, done, total, at, files))

    def note(self, text: str) -> None:
        with _REPORTING:
            self._emit(Note(shown(text), self._now()))

    def alert(self, text: str) -> None:
        """A warning shown at once and not repeated at the end (a registry retry), from any
        thread."""
        self.note(f"WARNING: {text}")

    def warn(self, text: str) -> None:
        text = shown(text)
        with _REPORTING:
            if text not in self.warnings:
                self.warnings.append(text)
                self._emit(BuildWarning(text, self._now()))

    def open_steps(self, thread: int | None = None) -> list[int]:
        """The steps not ended yet: all of them, or those `thread` opened."""
        with _REPORTING:
            return [number for number, (_, opener) in self._open.items()
                    if thread is None or opener == thread]

    def finish(self) -> None:
        for sink in self.sinks:
            sink.close()

    def _started(self, number: int, default: float) -> float:
        return self._open.pop(number, (default, 0))[0]

    def _flush(self, number: int) -> None:
        if number in self._partial:
            self.output(number, b"\n")


class PlainSink:
    """BuildKit's plain progress: `#3 [build 2/5] RUN make`, `#3 0.412 output line`,
    `#3 DONE 3.1s`, `#3 CACHED`; warnings listed after the build."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.warnings: list[str] = []

    def emit(self, event: Event) -> None:
        match event:
            case StepStarted(number, title):
                self._print(f"#{number} {title}")
            case StepCached(number):
                self._print(f"#{number} CACHED")
            case StepMissed(number, reason):
                self._print(f"#{number} not cached: {reason}")
            case StepInfo(number, text):
                self._print(f"#{number} {text}")
            case StepOutput(number, line, at):
                self._print(f"#{number} {at:.3f} {line}")
            case StepDone(number, _, seconds):
                self._print(f"#{number} DONE {seconds:.1f}s")
            case StepFailed(number, error, _, seconds):
                self._print(f"#{number} CANCELED" if error == CANCELED
                            else f"#{number} ERROR {seconds:.1f}s")
            case Note(text):
                self._print(text)
            case BuildWarning(text):
                self.warnings.append(text)

    def close(self) -> None:
        for text in self.warnings:
            self._print(f"WARNING: {text}")
        self.warnings.clear()

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)


class QuietSink:
    """`--progress=quiet`: only warnings, at the end (the CLI prints the image ID)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.plain = PlainSink(stream)

    def emit(self, event: Event) -> None:
        if isinstance(event, BuildWarning):
            self.plain.emit(event)

    def close(self) -> None:
        self.plain.close()


class JsonSink:
    """`--progress=json`: one JSON object per event and line, `{"event": "StepDone", ...}`, for
    programs that follow a build (the fields are the events' own, builder/progress/events.py)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr

    def emit(self, event: Event) -> None:
        record = {"event": type(event).__name__, **asdict(event)}
        print(json.dumps(record, ensure_ascii=False), file=self.stream, flush=True)

    def close(self) -> None:
        pass


