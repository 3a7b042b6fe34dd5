"""A layer read into its snapshot as a step of its own: a span on the trace's unpacks track, a
bar of files and bytes in the live view, a line of entries, bytes and time in the plain log. A
base image's first use (`pybuild load`, a pull, a build unpacking a stored layer) costs seconds,
and they should show."""
from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from builder.progress.sinks import Log
from layers.snapshots import Progress, Unpacking


def layer_steps(log: Log, verb: str) -> Unpacking:
    """The `unpacking(diff_id, size)` that layers/ enters around each layer it reads: a step
    titled `VERB sha256:0123456789ab` whose bar runs to `size` (None: unknown), with the
    `progress(entries, bytes)` it gives back. An error fails the step (it may be a download's,
    in a thread of its own); an interruption leaves it to the handler that stops the rest."""
    @contextlib.contextmanager
    def unpacking(diff_id: str, size: int | None) -> Iterator[Progress]:
        number = log.step(f"{verb} {diff_id[:19]}")
        started, last = time.monotonic(), [0, 0]

        def progress(entries: int, done: int) -> None:
            last[0], last[1] = entries, done
            log.progress(number, done, size, entries)

        try:
            yield progress
        except Exception as error:
            log.failed(number, str(error) or type(error).__name__)
            raise
        log.info(number, f"{last[0]:,} entries, {last[1] / 1e6:.1f}MB in "
                         f"{time.monotonic() - started:.1f}s")
        log.done(number)
    return unpacking
