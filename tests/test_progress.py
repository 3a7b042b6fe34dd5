"""What a build reports: the plain log's shape, `--progress=json`, and the Python API's result."""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from builder.api import BuildRequest, build
from builder.progress.events import StepMissed, StepStarted
from builder.progress.sinks import PlainSink
from tests.support import busybox_base, pybuild


@pytest.fixture
def project(tmp_path: Path) -> Path:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "a.txt").write_text("a\n")
    (context / "Dockerfile").write_text("FROM scratch\nENV X=1\nCOPY a.txt /a.txt\n"
                                        "COPY a.txt /b.txt\n")
    return context


def json_events(stderr: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines()]


def test_json_progress_is_one_object_per_line_with_cache_decisions(project, tmp_path) -> None:
    env = {"PYBUILD_CACHE_DIR": str(tmp_path / "cache")}
    args = ("--progress", "json", "-o", str(tmp_path / "out.tar"), "--iidfile",
            str(tmp_path / "iid"), str(project))
    first = json_events(pybuild(*args, env=env).stderr)
    kinds = [e["event"] for e in first]
    assert kinds[0] == "StepStarted" and kinds[-1] == "BuildFinished"
    missed = [e for e in first if e["event"] == "StepMissed"]
    assert [e["reason"] for e in missed] == ["no earlier build", "no earlier build"]
    layers = [e for e in first if e["event"] == "StepLayer"]
    assert len(layers) == 2 and all(e["diff_id"].startswith("sha256:") and e["size"] > 0
                                    for e in layers)
    finished = first[-1]
    assert finished["image_id"] == (tmp_path / "iid").read_text()
    assert finished["layers"] == [e["diff_id"] for e in layers]
    assert [s["reason"] for s in finished["steps"] if s["reason"]] == ["no earlier build"] * 2

    (project / "a.txt").write_text("changed\n")
    second = json_events(pybuild(*args, env=env).stderr)
    assert [e["reason"] for e in second if e["event"] == "StepMissed"] == ["a.txt changed",
                                                                           "a.txt changed"]
    (project / "Dockerfile").write_text("FROM scratch\nCOPY missing.txt /\n")
    failed = pybuild(*args, env=env)
    assert failed.returncode == 1
    last = json_events(failed.stderr)[-1]
    assert last["event"] == "BuildFailed" and "missing.txt" in last["error"]
    assert any(e["event"] == "StepFailed" for e in json_events(failed.stderr))


def test_the_api_returns_steps_with_timings_and_reasons(project, tmp_path) -> None:
    class Keep:
        def __init__(self) -> None:
            self.events: list = []

        def emit(self, event) -> None:
            self.events.append(event)

        def close(self) -> None:
            self.events.append("closed")

    request = BuildRequest(context=str(project), output=str(tmp_path / "out.tar"),
                           cache_dir=str(tmp_path / "cache"))
    kept = Keep()
    first = build(request, kept)
    assert kept.events[-1] == "closed"
    assert [type(e) for e in kept.events if isinstance(e, (StepStarted, StepMissed))][:3] == [
        StepStarted, StepStarted, StepMissed]
    copies = [s for s in first.steps if s.title.endswith("COPY a.txt /a.txt")]
    assert copies[0].reason == "no earlier build" and not copies[0].cached
    assert copies[0].layer == first.layers[0] and copies[0].seconds >= 0
    second = build(request)
    assert second.image_id == first.image_id
    assert [s.cached for s in second.steps if "COPY" in s.title] == [True, True]
    assert second.layer_sizes == first.layer_sizes and sum(second.layer_sizes) == second.size


def test_plain_log_lines_of_a_run_carry_their_time(tmp_path) -> None:
    base = busybox_base(tmp_path)
    env = {"PYBUILD_CACHE_DIR": str(tmp_path / "cache")}
    assert pybuild("load", "-q", "-i", str(base), env=env).returncode == 0
    context = tmp_path / "run"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM busybox:test\nRUN echo hello && echo world\n")
    result = pybuild("--progress", "plain", "--network", "none", "-o", str(tmp_path / "r.tar"),
                     str(context), env=env)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^#2 \d+\.\d{3} hello$", result.stderr, re.M)
    assert re.search(r"^#2 \d+\.\d{3} world$", result.stderr, re.M)
    assert re.search(r"^#2 DONE \d+\.\ds$", result.stderr, re.M)


def test_plain_sink_lists_warnings_after_the_build(tmp_path) -> None:
    stream = io.StringIO()
    sink = PlainSink(stream)
    build(BuildRequest(context=str(tmp_path), dockerfile_text="FROM scratch\n",
                       build_args={"UNUSED": "1"}, output=None, cache_dir=str(tmp_path / "c")),
          sink)
    lines = stream.getvalue().splitlines()
    assert lines[-1] == "WARNING: build-arg not consumed by any ARG: UNUSED"
