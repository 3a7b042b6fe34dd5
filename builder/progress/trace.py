"""`--trace FILE`: the build's timeline in Chrome's trace-event format, for Perfetto or
chrome://tracing, to see where a slow build spends its time: one track per stage for its steps,
one each for pulls, unpacks of layers into snapshots (a build's, a pull's, `pybuild load`'s),
exports, cache import and export, and pushes, and the whole build (or load) on top. Steps of a
track that overlap without nesting (layers unpacked at the same time) go to lanes of it:
`unpacks`, `unpacks 2`, ...

The file is written when the build ends, failed or not (a failed build is the one worth reading),
through a temp file and a rename.
"""
from __future__ import annotations

import json
from typing import Any

from builder.output.atomicfile import write_atomically
from builder.progress.events import BuildWarning, Event, Note, StepInfo, StepStarted
from builder.progress.summary import StepRecorder, StepSummary

_PID = 1
# Steps outside a stage, by how their title starts (the first match wins).
_TRACKS = (("pulling", "pulls"), ("importing", "cache import"), ("exporting cache", "cache export"),
           ("exporting", "exports"), ("pushing", "pushes"), ("unpacking", "unpacks"),
           ("loading layer", "unpacks"))


class TraceSink:
    """Keeps the events of one build (or other run of steps, `name`), and writes them as a trace
    when it ends."""

    def __init__(self, path: str, name: str = "build") -> None:
        self.path = path
        self.name = name
        self.recorder = StepRecorder()
        self.tracks: dict[int, str] = {}
        self.info: dict[int, list[str]] = {}
        self.instants: list[Note | BuildWarning] = []
        self.end = 0.0

    def emit(self, event: Event) -> None:
        self.recorder.emit(event)
        self.end = max(self.end, event.at)
        match event:
            case StepStarted(number, title, _, stage):
                self.tracks[number] = _track(title, stage)
            case StepInfo(number, text):
                self.info.setdefault(number, []).append(text)
            case Note() | BuildWarning():
                self.instants.append(event)

    def close(self) -> None:
        steps = self.recorder.summary()
        write_atomically(self.path, json.dumps(
            trace_document(steps, self.tracks, self.info, self.instants, self.end, self.name),
            ensure_ascii=False).encode())


def trace_document(steps: tuple[StepSummary, ...], tracks: dict[int, str],
                   info: dict[int, list[str]], instants: list[Note | BuildWarning],
                   end: float, name: str = "build") -> dict[str, Any]:
    """The JSON object format: complete events ("X") for the whole run and each step, instants ("i")
    for notes and warnings, and metadata ("M") naming the process and its tracks. Times are
    whole microseconds from the build's start; a step's end is rounded as its start is, so steps
    that nest in time nest in the trace too."""
    lanes = _lanes(steps, tracks)
    tids = {name: 1}  # the top track, of the whole run
    for step in steps:
        tids.setdefault(lanes[step.number], len(tids) + 1)
    failed = [step for step in steps if step.error is not None]
    events: list[dict[str, Any]] = [
        _complete(name, name, 1, 0.0, end,
                  {"steps": len(steps), **({"error": failed[0].error} if failed else {})})]
    for step in steps:
        events.append(_complete(step.title, _category(tracks[step.number]),
                                tids[lanes[step.number]], step.started,
                                step.started + step.seconds, _step_args(step, info)))
    for instant in instants:
        events.append({"ph": "i", "s": "t", "name": instant.text,
                       "cat": "warning" if isinstance(instant, BuildWarning) else "note",
                       "ts": _micro(instant.at), "pid": _PID, "tid": 1})
    metadata = [{"ph": "M", "name": "process_name", "pid": _PID, "tid": 0,
                 "args": {"name": "pybuild"}}]
    for name, tid in tids.items():
        metadata.append({"ph": "M", "name": "thread_name", "pid": _PID, "tid": tid,
                         "args": {"name": name}})
        metadata.append({"ph": "M", "name": "thread_sort_index", "pid": _PID, "tid": tid,
                         "args": {"sort_index": tid}})
    return {"traceEvents": metadata + events, "displayTimeUnit": "ms"}


def _lanes(steps: tuple[StepSummary, ...], tracks: dict[int, str]) -> dict[int, str]:
    """The lane of each step: its track's first whose open slices it nests in (a viewer draws
    a thread's slices as a stack, so overlapping ones need threads of their own)."""
    open_ends: dict[str, list[list[int]]] = {}  # track -> per lane, the ends of open slices
    chosen = {}
    for step in sorted(steps, key=lambda step: (_micro(step.started), step.number)):
        start, end = _micro(step.started), _micro(step.started + step.seconds)
        track = tracks[step.number]
        stacks = open_ends.setdefault(track, [])
        for stack in stacks:
            while stack and stack[-1] <= start:
                stack.pop()
        lane = next((i for i, stack in enumerate(stacks) if not stack or end <= stack[-1]),
                    len(stacks))
        if lane == len(stacks):
            stacks.append([])
        stacks[lane].append(end)
        chosen[step.number] = track if lane == 0 else f"{track} {lane + 1}"
    return chosen


def _track(title: str, stage: str | None) -> str:
    for prefix, track in _TRACKS:
        if title.startswith(prefix):
            return track
    return f"stage {stage}" if stage else "steps"


def _category(track: str) -> str:
    return "stage" if track.startswith("stage ") else track


def _step_args(step: StepSummary, info: dict[int, list[str]]) -> dict[str, Any]:
    args: dict[str, Any] = {"step": step.number}
    if step.cached:
        args["cached"] = True
    if step.reason is not None:
        args["reason"] = step.reason
    if step.layer is not None:
        args["layer"], args["layer_size"] = step.layer, step.layer_size
    if step.number in info:
        args["info"] = info[step.number]
    if step.error is not None:
        args["error"] = step.error
    return args


def _complete(name: str, category: str, tid: int, start: float, end: float,
              args: dict[str, Any]) -> dict[str, Any]:
    ts = _micro(start)
    return {"ph": "X", "name": name, "cat": category, "ts": ts, "dur": _micro(end) - ts,
            "pid": _PID, "tid": tid, "args": args}


def _micro(seconds: float) -> int:
    return round(seconds * 1_000_000)
