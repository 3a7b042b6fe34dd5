"""Per-step figures of a build, gathered from its events: what the build result, `--metadata-file`
and the Python API report (timings, cache decisions and their reasons, layers)."""
from __future__ import annotations

from dataclasses import dataclass, replace

from builder.progress.events import (Event, StepCached, StepDone, StepFailed, StepLayer, StepMissed,
                                     StepStarted)


@dataclass(frozen=True)
class StepSummary:
    """One step of the log: `cached` when reused, else `reason` says why it ran (None for steps
    that are not cache decisions, such as FROM or the export); `layer` and `layer_size` name
    the layer it made or reused; `seconds` from its start to its end."""

    number: int
    title: str
    started: float
    seconds: float = 0.0
    cached: bool = False
    reason: str | None = None
    layer: str | None = None
    layer_size: int = 0
    error: str | None = None


class StepRecorder:
    """A sink that keeps a StepSummary per step, updated as its events arrive."""

    def __init__(self) -> None:
        self.steps: dict[int, StepSummary] = {}

    def emit(self, event: Event) -> None:
        match event:
            case StepStarted(number, title, at):
                self.steps[number] = StepSummary(number, title, at)
            case StepCached(number, at) if number in self.steps:
                self._update(number, cached=True, seconds=at - self.steps[number].started)
            case StepMissed(number, reason):
                self._update(number, reason=reason)
            case StepLayer(number, diff_id, size):
                self._update(number, layer=diff_id, layer_size=size)
            case StepDone(number, _, seconds):
                self._update(number, seconds=seconds)
            case StepFailed(number, error, _, seconds):
                self._update(number, seconds=seconds, error=error)

    def close(self) -> None:
        pass

    def summary(self) -> tuple[StepSummary, ...]:
        return tuple(self.steps[n] for n in sorted(self.steps))

    def _update(self, number: int, **changes) -> None:
        if number in self.steps:
            self.steps[number] = replace(self.steps[number], **changes)
