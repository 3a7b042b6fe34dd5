"""Stopping the stages of a build that run at the same time: when one fails (or the build is
interrupted), the RUNs the others are running are killed at once, and each stops before its next
step. Kept apart from the sandbox so that a build with nothing to run imports none of it."""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from contextvars import ContextVar


class Canceled(BaseException):
    """A stage stopped because another failed: never the build's error (that is the other's).
    A BaseException, so that no `except Exception` on the way takes it for a step's failure."""


class Cancellation:
    """The RUNs of the stages built together, and whether they were told to stop. A RUN that
    starts after `cancel` is killed as it starts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[int, int] = {}  # leader pid -> its pidfd
        self.canceled = False

    def started(self, leader: int, pidfd: int) -> None:
        with self._lock:
            if self.canceled:
                _kill(leader, pidfd)
            else:
                self._running[leader] = pidfd

    def ended(self, leader: int) -> None:
        """Before the RUN's pidfd is closed: it is never signalled after."""
        with self._lock:
            self._running.pop(leader, None)

    def cancel(self) -> None:
        with self._lock:
            self.canceled = True
            for leader, pidfd in self._running.items():
                _kill(leader, pidfd)

    def check(self) -> None:
        """Raise Canceled once the stages were told to stop: a stage asks before each step."""
        if self.canceled:
            raise Canceled


# The cancellation of the stages the calling thread builds for; None in a build of one stage at a
# time, where Ctrl-C reaches the RUN's own thread.
CURRENT: ContextVar[Cancellation | None] = ContextVar("cancellation", default=None)


def _kill(leader: int, pidfd: int) -> None:
    """The RUN's leader: its death ends the sandbox below it (PR_SET_PDEATHSIG), and the RUN's
    thread then kills what is left of its group, as after any RUN."""
    with contextlib.suppress(ProcessLookupError):
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(leader, signal.SIGKILL)  # a leader not yet in its own group has none
