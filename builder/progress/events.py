"""What a build reports as it goes, as data: the one stream every view of a build is made from
(the plain CI log, the live terminal view, `--progress=json`, the `--trace` timeline, and the
per-step figures of the build result). Times are seconds since the build started.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class StepStarted:
    number: int
    title: str
    at: float
    stage: str | None = None


@dataclass(frozen=True)
class StepCached:
    number: int
    at: float


@dataclass(frozen=True)
class StepMissed:
    """The step runs; `reason` names the first input that differs from the closest earlier
    build."""

    number: int
    reason: str
    at: float


@dataclass(frozen=True)
class StepInfo:
    number: int
    text: str
    at: float


@dataclass(frozen=True)
class StepOutput:
    """One line the step's command printed (without its newline)."""

    number: int
    line: str
    at: float


@dataclass(frozen=True)
class StepLayer:
    number: int
    diff_id: str
    size: int
    at: float


@dataclass(frozen=True)
class StepProgress:
    """A transfer of a step (a pull, an export, an unpack) so far: `done` of `total` bytes (None
    when the total is unknown), and `files` so far where a count of files means something."""

    number: int
    done: int
    total: int | None
    at: float
    files: int | None = None


@dataclass(frozen=True)
class StepDone:
    number: int
    at: float
    seconds: float


# The error of a step stopped because another stage of the build failed.
CANCELED = "CANCELED"


@dataclass(frozen=True)
class StepFailed:
    number: int
    error: str
    at: float
    seconds: float


@dataclass(frozen=True)
class Note:
    text: str
    at: float


@dataclass(frozen=True)
class BuildWarning:
    text: str
    at: float


Event = (StepStarted | StepCached | StepMissed | StepInfo | StepOutput | StepLayer | StepProgress
         | StepDone | StepFailed | Note | BuildWarning)


class Sink(Protocol):
    """Something that shows or keeps the events: called in order, one at a time (from the thread
    of the stage or transfer that reports, under the log's lock)."""

    def emit(self, event: Event) -> None: ...

    def close(self) -> None: ...
