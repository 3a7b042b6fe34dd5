"""`--trace FILE`: a Chrome trace-event timeline with a track per stage and per kind of transfer,
whose slices nest in time; written for a failed build too."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from builder.progress.events import StepDone, StepStarted
from builder.progress.trace import TraceSink
from tests.support import pybuild

DOCKERFILE = """\
FROM scratch AS base
COPY a.txt /a.txt
FROM scratch AS other
COPY b.txt /b.txt
WORKDIR /w
FROM base
COPY --from=other /b.txt /c.txt
ENV X=1
COPY a.txt /d.txt
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "a.txt").write_text("a\n" * 1000)
    (context / "b.txt").write_text("b\n")
    (context / "Dockerfile").write_text(DOCKERFILE)
    return context


def tracks(path: Path, top: str = "build") -> dict[str, list[dict]]:
    """The trace's slices by track name, after checking the format and that the slices of each
    track nest (disjoint or contained) and lie within the slice of the whole run (`top`)."""
    document = json.loads(path.read_text())
    assert document["displayTimeUnit"] == "ms"
    events = document["traceEvents"]
    assert [e["args"]["name"] for e in events
            if e["ph"] == "M" and e["name"] == "process_name"] == ["pybuild"]
    names = {e["tid"]: e["args"]["name"] for e in events
             if e["ph"] == "M" and e["name"] == "thread_name"}
    slices = [e for e in events if e["ph"] == "X"]
    (build,) = [e for e in slices if e["name"] == top]
    for event in slices:
        assert {"ts", "dur", "pid", "tid", "name", "cat", "args"} <= event.keys()
        assert event["dur"] >= 0 and event["tid"] in names
        assert build["ts"] <= event["ts"]
        assert event["ts"] + event["dur"] <= build["ts"] + build["dur"]
    for tid in names:
        open_ends: list[int] = []
        for event in sorted((e for e in slices if e["tid"] == tid),
                            key=lambda e: (e["ts"], -e["dur"])):
            while open_ends and open_ends[-1] <= event["ts"]:
                open_ends.pop()
            assert not open_ends or event["ts"] + event["dur"] <= open_ends[-1], event
            open_ends.append(event["ts"] + event["dur"])
    return {name: [e for e in slices if e["tid"] == tid] for tid, name in names.items()}


def test_a_track_per_stage_and_per_transfer(project: Path, tmp_path: Path) -> None:
    env = {"PYBUILD_CACHE_DIR": str(tmp_path / "cache")}
    shared = tmp_path / "shared-cache"
    trace = tmp_path / "trace.json"
    result = pybuild("--trace", str(trace), "-o", str(tmp_path / "out.tar"),
                     "--cache-to", f"type=local,dest={shared}", str(project), env=env)
    assert result.returncode == 0, result.stderr
    first = tracks(trace)
    # In the order they start: `base` and `other`, built at the same time (either may start
    # first), then the target, whose COPY --from unpacks the WORKDIR layer of `other` to read
    # it (a COPY's layer, read later, is unpacked as it is written: no step of its own).
    assert list(first)[0] == "build" and set(list(first)[1:3]) == {"stage base", "stage other"}
    assert list(first)[3:] == ["stage stage-2", "unpacks", "exports", "cache export"]
    for unpack in first["unpacks"]:
        assert unpack["name"].startswith("unpacking sha256:")
        assert re.fullmatch(r"\d+ entries, [\d.]+MB in [\d.]+s", unpack["args"]["info"][0])
    assert len(first["unpacks"]) == 1
    assert [e["name"] for e in first["stage other"]] == ["[other] FROM scratch",
                                                        "[other 1/2] COPY b.txt /b.txt",
                                                        "[other 2/2] WORKDIR /w"]
    copies = [e for e in first["stage stage-2"] if "COPY" in e["name"]]
    assert [e["args"]["reason"] for e in copies] == ["no earlier build"] * 2
    assert all(e["args"]["layer"].startswith("sha256:") and e["args"]["layer_size"] > 0
               for e in copies)
    assert [e["name"] for e in first["exports"]] == [f"exporting to {tmp_path / 'out.tar'}"]
    assert first["build"][0]["args"] == {"steps": 10 + len(first["unpacks"])}
    assert not list(tmp_path.glob(".trace.json.*")), "no temp file is left behind"

    again = pybuild("--trace", str(trace), "-o", str(tmp_path / "out.tar"), "--cache-from",
                    f"type=local,src={shared}", str(project),
                    env={"PYBUILD_CACHE_DIR": str(tmp_path / "empty-cache")})
    assert again.returncode == 0, again.stderr
    second = tracks(trace)
    assert "cache import" in second and "cache export" not in second
    reused = [e for e in second["stage stage-2"] if "COPY" in e["name"]]
    assert [e["args"].get("cached") for e in reused] == [True, True]
    assert all("reason" not in e["args"] for e in reused)


def test_a_failed_build_still_writes_its_trace(project: Path, tmp_path: Path) -> None:
    (project / "Dockerfile").write_text("FROM scratch\nCOPY a.txt /a.txt\nCOPY missing.txt /\n")
    trace = tmp_path / "trace.json"
    result = pybuild("--trace", str(trace), "-o", str(tmp_path / "out.tar"), str(project),
                     env={"PYBUILD_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 1
    timeline = tracks(trace)
    failed = timeline["stage stage-0"][-1]
    assert failed["name"] == "[stage-0 2/2] COPY missing.txt /"
    assert "missing.txt" in failed["args"]["error"]
    assert timeline["build"][0]["args"]["error"] == failed["args"]["error"]
    assert not (tmp_path / "out.tar").exists()


def test_a_trace_in_a_missing_directory_is_a_usage_error(project: Path, tmp_path: Path) -> None:
    result = pybuild("--trace", str(tmp_path / "nowhere" / "trace.json"), str(project),
                     env={"PYBUILD_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 2 and "--trace" in result.stderr


def test_steps_of_a_track_that_overlap_get_lanes_of_it(tmp_path: Path) -> None:
    """Layers unpacked at the same time overlap without nesting: a lane each, so the slices of
    every track still nest; a step nested in another stays in its lane."""
    path = tmp_path / "trace.json"
    sink = TraceSink(str(path), "load")
    spans = {1: ("unpacking sha256:1", 0.0, 3.0), 2: ("unpacking sha256:2", 1.0, 4.0),
             3: ("unpacking sha256:3", 1.5, 2.0), 4: ("unpacking sha256:4", 3.5, 5.0),
             5: ("unpacking sha256:5", 4.5, 6.0)}
    for number, (title, start, end) in spans.items():
        sink.emit(StepStarted(number, title, start))
    for number, (_, start, end) in sorted(spans.items(), key=lambda item: item[1][2]):
        sink.emit(StepDone(number, end, end - start))
    sink.close()
    lanes = {e["name"][-1]: track for track, events in tracks(path, top="load").items()
             for e in events if e["cat"] == "unpacks"}
    assert lanes == {"1": "unpacks", "2": "unpacks 2", "3": "unpacks", "4": "unpacks",
                     "5": "unpacks 2"}
