"""The build log under stages built at the same time (builder/progress/sinks.py): fork() waits for
a report under way, so a forked sandbox child never finds a stream's lock held by a thread that
does not exist in it; reports from many threads keep their steps; each step knows its thread."""
from __future__ import annotations

import os
import threading

from builder.progress.events import CANCELED, Event, StepFailed, StepOutput, StepStarted
from builder.progress.sinks import Log


class _Kept:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def close(self) -> None:
        pass


class _Blocking:
    """A sink that holds the log inside its emit until told to go on."""

    def __init__(self) -> None:
        self.inside, self.go = threading.Event(), threading.Event()

    def emit(self, event: Event) -> None:
        self.inside.set()
        assert self.go.wait(10)

    def close(self) -> None:
        pass


def test_fork_waits_until_no_thread_is_reporting() -> None:
    sink = _Blocking()
    log = Log(sink)
    reporter = threading.Thread(target=log.note, args=("a line",))
    reporter.start()
    assert sink.inside.wait(10)
    forked = threading.Event()

    def fork() -> None:
        child = os.fork()
        if child == 0:
            os._exit(0)
        forked.set()
        os.waitpid(child, 0)

    forker = threading.Thread(target=fork)
    forker.start()
    assert not forked.wait(0.5), "fork() went ahead while a thread held the log"
    sink.go.set()
    assert forked.wait(10)
    forker.join(10)
    reporter.join(10)


def test_lines_of_many_threads_stay_with_their_steps() -> None:
    kept = _Kept()
    log = Log(kept)
    numbers: dict[int, int] = {}

    def stage(index: int) -> None:
        number = log.step(f"[s{index} 1/1] RUN", f"s{index}")
        numbers[index] = number
        for line in range(200):
            log.output(number, f"s{index}-{line}\n".encode()[:3])  # split across chunks
            log.output(number, f"s{index}-{line}\n".encode()[3:])
        if index % 2:
            log.canceled(number)
        else:
            log.done(number)

    threads = [threading.Thread(target=stage, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    titles = {e.number: e.title for e in kept.events if isinstance(e, StepStarted)}
    assert sorted(titles) == list(range(1, 9))
    lines = [e for e in kept.events if isinstance(e, StepOutput)]
    assert len(lines) == 8 * 200
    assert all(titles[e.number].startswith(f"[{e.line.split('-')[0]} ") for e in lines)
    assert sorted(e.number for e in kept.events
                  if isinstance(e, StepFailed) and e.error == CANCELED) == \
        sorted(numbers[i] for i in range(1, 8, 2))


def test_open_steps_by_thread() -> None:
    log = Log(_Kept())
    mine = log.step("mine")
    theirs: list[int] = []
    other = threading.Thread(target=lambda: theirs.append(log.step("theirs")))
    other.start()
    other.join()
    assert log.open_steps(threading.get_ident()) == [mine]
    assert log.open_steps(other.ident) == theirs
    assert sorted(log.open_steps()) == sorted([mine, *theirs])
