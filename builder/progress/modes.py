"""Which sink a `--progress` mode means. Apart from the sinks so that choosing the live view
(progress/tty.py, which imports rich and the sinks' helpers) makes no import circle."""
from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import TextIO

from builder.progress.events import Sink
from builder.progress.sinks import JsonSink, PlainSink, QuietSink


def terminal_view_wanted(stream: TextIO, environ: Mapping[str, str] = os.environ) -> bool:
    """`--progress auto`: the live view only for a person at a terminal that can show it; CI logs,
    pipes, NO_COLOR and TERM=dumb get plain lines."""
    return stream.isatty() and not environ.get("NO_COLOR") and environ.get("TERM") != "dumb"


def sink_for(progress: str, stream: TextIO | None = None, heading: str = "Building") -> Sink:
    """The sink of a `--progress` value: auto, tty, plain, quiet or json (`heading`: the live
    view's header word)."""
    stream = stream or sys.stderr
    if progress == "auto":
        progress = "tty" if terminal_view_wanted(stream) else "plain"
    if progress == "tty":
        from builder.progress.tty import TtySink  # imports rich: only for a terminal
        return TtySink(stream, heading=heading)
    return {"plain": PlainSink, "quiet": QuietSink, "json": JsonSink}[progress](stream)


def progress_sinks(progress: str, trace: str | None, name: str = "build",
                   heading: str = "Building") -> list[Sink]:
    """The sinks of `--progress` and `--trace FILE`: of a build, or another run of steps
    (`name`, the trace's top slice; `heading`, the live view's header word)."""
    sinks = [sink_for(progress, heading=heading)]
    if trace:
        from builder.progress.trace import TraceSink
        sinks.append(TraceSink(trace, name))
    return sinks
