"""The live terminal view of a build (`--progress tty`, and `auto` at a terminal), drawn with rich:
every step with its state and time, the last lines of each running step's output, a bar for
each transfer; at the end a static summary of the steps (as BuildKit leaves one), then the
warnings.

Events only update the state; rich redraws it at a fixed rate from its own thread, so a step
that prints a million lines or a pull that reads a million chunks costs no more drawing than an
idle one (DESIGN.md, performance principle 8).
"""
from __future__ import annotations

import collections
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from builder.progress.events import (BuildWarning, Event, Note, StepCached, StepDone, StepFailed,
                                     StepInfo, StepOutput, StepProgress, StepStarted)
from builder.progress.summary import StepRecorder, StepSummary
from builder.units import human_size

TAIL_LINES = 6
REFRESH_PER_SECOND = 8
# What a command's output may hold that would move the cursor or recolour the view.
_CONTROL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-_]|[\x00-\x08\x0a-\x1f\x7f]")


class TtySink:
    """The state the view is drawn from, guarded by a lock: the build's thread (and a transfer's
    workers) write it, rich's refresh thread reads it."""

    def __init__(self, stream: TextIO | None = None, *, console: Console | None = None,
                 refresh_per_second: float = REFRESH_PER_SECOND,
                 clock: Callable[[], float] = time.monotonic, heading: str = "Building") -> None:
        self.console = console or Console(file=stream or sys.stderr, highlight=False)
        self.heading = heading  # the header's word: `[+] Building 1.2s (3/5)`
        self.refresh_per_second = refresh_per_second
        self.clock = clock
        self.recorder = StepRecorder()
        self.finished: set[int] = set()
        self.tails: dict[int, collections.deque[str]] = {}
        self.infos: dict[int, list[str]] = {}
        self.transfers: dict[int, StepProgress] = {}
        self.warnings: list[str] = []
        self._origin: float | None = None  # the clock's reading when the build started
        self._lock = threading.Lock()
        self._live: Live | None = None

    def emit(self, event: Event) -> None:
        if isinstance(event, Note):
            self._start()
            self.console.print(Text(event.text, style="dim"))  # above the live view
            return
        with self._lock:
            if self._origin is None:
                self._origin = self.clock() - event.at
            self.recorder.emit(event)
            match event:
                case StepStarted(number):
                    self.tails[number] = collections.deque(maxlen=TAIL_LINES)
                case StepOutput(number, line) if number in self.tails:
                    self.tails[number].append(line)
                case StepInfo(number, text) if number in self.tails:
                    self.tails[number].append(text)
                    self.infos.setdefault(number, []).append(text)
                case StepProgress(number):
                    self.transfers[number] = event
                case StepCached(number) | StepDone(number) | StepFailed(number):
                    self.finished.add(number)
                case BuildWarning(text):
                    self.warnings.append(text)
        self._start()

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        with self._lock:
            summary = self._frame(final=True) if self.recorder.steps else None
            warnings, self.warnings = self.warnings, []
        if summary is not None:
            self.console.print(summary)
        for text in warnings:
            self.console.print(Text(f"WARNING: {text}", style="yellow"))

    def frame(self) -> RenderableType:
        """What the live view shows now."""
        with self._lock:
            return self._frame(final=False)

    def _start(self) -> None:
        if self._live is None:
            self._live = Live(console=self.console, get_renderable=self.frame, transient=True,
                              refresh_per_second=self.refresh_per_second, redirect_stdout=False)
            self._live.start()

    def _now(self) -> float:
        return 0.0 if self._origin is None else self.clock() - self._origin

    def _frame(self, final: bool) -> RenderableType:
        steps = self.recorder.summary()
        now = self._now()
        failed = any(step.error is not None for step in steps)
        state = (" ERROR" if failed else " FINISHED") if final else ""
        header = Text(f"[+] {self.heading} {now:.1f}s ({len(self.finished)}/{len(steps)}){state}",
                      style="bold red" if failed and final else "bold")
        groups = [(step.number in self.finished, self._rows(step, now, final)) for step in steps]
        room = None if final else max(self.console.size.height - 2, 1)
        table = Table.grid(expand=True)
        table.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
        table.add_column(justify="right", no_wrap=True)
        for row in _fit(groups, room):
            table.add_row(*row)
        return Group(header, table)

    def _rows(self, step: StepSummary, now: float, final: bool) -> list[tuple[RenderableType, ...]]:
        """A step's line, then (while it runs) its transfer and the last lines of its output;
        in the summary, its notes (`from ...`, `unchanged ...`)."""
        running = step.number not in self.finished
        label, style = _state(step, running)
        title = Text(" => ", style=style)
        title.append(f"{label} " if label else "")
        title.append(step.title, style="bold" if running else None)
        if step.reason:
            title.append(f"  (not cached: {step.reason})", style="dim")
        seconds = now - step.started if running else step.seconds
        rows: list[tuple[RenderableType, ...]] = [(title, Text(f"{seconds:.1f}s", style=style))]
        if final:
            rows += [(Text(f" => => {text}", style="dim"), Text("")) for text in
                     self.infos.get(step.number, ())]
            return rows
        if not running:
            return rows
        transfer = self.transfers.get(step.number)
        if transfer is not None:
            rows.append((_transfer(transfer), Text("")))
        rows += [(Text(f" => => {_printable(line)}", style="dim"), Text(""))
                 for line in self.tails.get(step.number, ())]
        return rows


def _state(step: StepSummary, running: bool) -> tuple[str, str]:
    """The word before a step's title and its colour, as BuildKit's view has them."""
    if step.error is not None:
        return "ERROR", "red"
    if step.cached:
        return "CACHED", "blue"
    return "", "cyan" if running else "blue"


def _transfer(progress: StepProgress) -> RenderableType:
    bar = Table.grid(padding=(0, 1))
    total = f" / {human_size(progress.total)}" if progress.total is not None else ""
    files = f"{progress.files:,} files, " if progress.files is not None else ""
    bar.add_row(Text(" => =>"), ProgressBar(total=progress.total, completed=progress.done,
                                             width=30),
                Text(f"{files}{human_size(progress.done)}{total}"))
    return bar


def _fit(groups: list[tuple[bool, list]], room: int | None) -> list:
    """The rows that fit in `room` lines: the oldest finished steps give way first (running
    steps stay); every row when there is no limit."""
    needed = sum(len(rows) for _, rows in groups)
    kept = []
    for finished, rows in groups:
        if room is not None and finished and needed > room:
            needed -= len(rows)
            continue
        kept.extend(rows)
    return kept


def _printable(line: str) -> str:
    """A line of a command's output as the view can show it: what a carriage return overwrote
    is gone, and no escape sequence reaches the terminal."""
    return _CONTROL.sub("", line.rstrip("\r\n").rsplit("\r", 1)[-1])
