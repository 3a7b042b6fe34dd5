"""The live terminal view: what it draws, when `--progress auto` picks it, and that nothing but a
terminal ever gets an escape code."""
from __future__ import annotations

import io
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from builder.progress.events import (BuildWarning, Note, StepCached, StepDone, StepInfo, StepMissed,
                                     StepOutput, StepProgress, StepStarted)
from builder.progress.modes import sink_for, terminal_view_wanted
from builder.progress.sinks import PlainSink
from builder.progress.tty import TAIL_LINES, TtySink
from tests.support import ROOT, busybox_base, pybuild


def _text(renderable) -> str:
    """A renderable as plain text, as a non-terminal would get it."""
    out = io.StringIO()
    Console(file=out, width=100, force_terminal=False).print(renderable)
    return out.getvalue()


def test_the_view_shows_steps_their_states_and_the_last_output_lines() -> None:
    screen = io.StringIO()
    now = [0.0]
    sink = TtySink(console=Console(file=screen, force_terminal=True, width=100, height=40),
                   clock=lambda: now[0])
    sink.emit(StepStarted(1, "[stage-0] FROM busybox:test", 0.0))
    sink.emit(StepInfo(1, "from the local image store", 0.0))
    sink.emit(StepDone(1, 0.1, 0.1))
    sink.emit(StepStarted(2, "[stage-0 1/3] COPY app /app", 0.1))
    sink.emit(StepCached(2, 0.1))
    sink.emit(StepStarted(3, "[stage-0 2/3] RUN make", 0.2))
    sink.emit(StepMissed(3, "app/main.c changed", 0.2))
    for number in range(10):
        sink.emit(StepOutput(3, f"compiling part {number}", 0.3))
    sink.emit(StepStarted(4, "pulling alpine:3", 0.3))
    sink.emit(StepProgress(4, 5_000_000, 12_000_000, 0.4))
    sink.emit(Note("sandbox: namespaces", 0.4))
    sink.emit(BuildWarning("Dockerfile:1: MaintainerDeprecated: ...", 0.4))
    now[0] = 2.5

    frame = _text(sink.frame())
    assert "[+] Building 2.5s (2/4)" in frame
    assert " => [stage-0] FROM busybox:test" in frame
    assert " => CACHED [stage-0 1/3] COPY app /app" in frame
    assert " => [stage-0 2/3] RUN make  (not cached: app/main.c changed)" in frame
    shown = [f"compiling part {n}" for n in range(10 - TAIL_LINES, 10)]
    assert all(f" => => {line}" in frame for line in shown)
    assert "compiling part 0" not in frame
    assert "5.0MB / 12.0MB" in frame
    assert "2.3s" in frame  # the RUN has been running since 0.2s

    sink.emit(StepDone(3, 2.6, 2.4))
    sink.emit(StepDone(4, 2.6, 2.3))
    now[0] = 2.6
    sink.close()
    drawn = screen.getvalue()
    assert "\x1b[" in drawn
    summary = drawn[drawn.rindex("[+] Building"):]
    assert summary.startswith("[+] Building 2.6s (4/4) FINISHED")
    assert "CACHED [stage-0 1/3] COPY app /app" in summary
    assert "=> => from the local image store" in summary
    assert "compiling part" not in summary  # output was for while it ran
    assert "WARNING: Dockerfile:1: MaintainerDeprecated: ..." in summary
    assert "sandbox: namespaces" in drawn


def test_command_output_cannot_move_the_cursor_or_recolour_the_view() -> None:
    sink = TtySink(console=Console(file=io.StringIO(), force_terminal=True, width=100))
    sink.emit(StepStarted(1, "RUN ./progress", 0.0))
    sink.emit(StepOutput(1, "\x1b[2J\x1b[31mred\x1b[0m 10%\r 100%\r", 0.1))
    frame = _text(sink.frame())
    assert "\x1b" not in frame and " => =>  100%" in frame
    sink.close()


def test_auto_picks_the_view_only_for_a_terminal_that_can_show_it() -> None:
    master, slave = pty.openpty()
    with open(slave, "w") as terminal:
        assert terminal_view_wanted(terminal, {"TERM": "xterm"})
        assert not terminal_view_wanted(terminal, {"TERM": "xterm", "NO_COLOR": "1"})
        assert not terminal_view_wanted(terminal, {"TERM": "dumb"})
        assert isinstance(sink_for("tty", terminal), TtySink)
        assert isinstance(sink_for("plain", terminal), PlainSink)
    os.close(master)
    assert not terminal_view_wanted(io.StringIO(), {"TERM": "xterm"})
    assert isinstance(sink_for("auto", io.StringIO()), PlainSink)


def _in_terminal(*args: str, env: dict[str, str]) -> tuple[int, str]:
    """Run the pybuild CLI with a pseudo-terminal as its stdin, stdout and stderr (120 columns,
    colours allowed unless `env` says NO_COLOR); returns its status and all it wrote there."""
    master, slave = pty.openpty()
    inherited = {key: value for key, value in os.environ.items() if key != "NO_COLOR"}
    process = subprocess.Popen([sys.executable, "-m", "builder.cli", *args], cwd=ROOT,
                               stdin=slave, stdout=slave, stderr=slave,
                               env=inherited | {"TERM": "xterm", "COLUMNS": "120"} | env)
    os.close(slave)
    written = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the terminal's other end is closed: the process has ended
            break
        if not chunk:
            break
        written += chunk
    os.close(master)
    return process.wait(timeout=120), written.decode(errors="replace")


@pytest.fixture
def run_project(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A context whose RUN prints, sleeps (so that the view draws it running) and prints again,
    on the busybox base; and the environment that finds the base."""
    env = {"PYBUILD_CACHE_DIR": str(tmp_path / "cache")}
    assert pybuild("load", "-q", "-i", str(busybox_base(tmp_path)), env=env).returncode == 0
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(
        "FROM busybox:test\nRUN echo first-line && sleep 1 && echo second-line\n")
    return context, env


def test_a_terminal_build_shows_running_output_then_cached_steps(run_project, tmp_path) -> None:
    context, env = run_project
    args = ("--progress", "tty", "--network", "none", "-o", str(tmp_path / "out.tar"),
            str(context))
    status, screen = _in_terminal(*args, env=env)
    assert status == 0, screen
    assert "\x1b[" in screen
    assert "[stage-0 1/1] RUN echo first-line && sleep 1 && echo second-line" in screen
    assert "=> => first-line" in screen  # drawn while the step ran
    assert "FINISHED" in screen and "built sha256:" in screen

    status, screen = _in_terminal(*args, env=env)
    assert status == 0, screen
    assert "CACHED [stage-0 1/1] RUN echo first-line" in screen


def test_no_color_or_no_terminal_gives_the_plain_log(run_project, tmp_path) -> None:
    context, env = run_project
    args = ("--network", "none", "-o", str(tmp_path / "out.tar"), str(context))
    status, screen = _in_terminal(*args, env={**env, "NO_COLOR": "1"})
    assert status == 0, screen
    assert "#2 [stage-0 1/1] RUN echo first-line" in screen and "\x1b[" not in screen

    piped = pybuild(*args, env=env)
    assert piped.returncode == 0, piped.stderr
    assert "#2 CACHED" in piped.stderr and "\x1b[" not in piped.stderr


def test_a_terminal_load_shows_each_layer_read_in_the_live_view(tmp_path: Path) -> None:
    env = {"PYBUILD_CACHE_DIR": str(tmp_path / "cache")}
    status, screen = _in_terminal("load", "-i", str(busybox_base(tmp_path)), env=env)
    assert status == 0, screen
    assert "\x1b[" in screen
    summary = screen[screen.rindex("[+] Loading"):]
    assert re.search(r"\(1/1\) FINISHED.* => loading layer sha256:\w{12} .*"
                     r" => => [\d,]+ entries, [\d.]+MB in [\d.]+s", summary, re.S), summary
    assert "Loaded image: busybox:test" in screen
