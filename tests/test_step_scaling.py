"""A step's cost must not grow with the number of steps before it (issue 11: 10,000 `ENV` lines
took 39 s, eight times 1,250 lines' cost squared). Checked by counting, not timing: the Python lines
a build executes, traced, per instruction, for a short and a long Dockerfile. A step that
searches or rebuilds everything before it executes a line per earlier variable, and the
per-instruction count of the long build grows with its length. Timings are
tests/benchmarks/test_step_scaling.py's."""
from __future__ import annotations

import sys
from dataclasses import replace

import pytest

from builder.api import BuildRequest, build
from layers.image import ContainerConfig

SHORT, LONG = 200, 1600


def _dockerfile(lines: int) -> str:
    """ENV (new names, then the first ones again), with LABEL and ARG between them."""
    body = []
    for i in range(lines):
        if i % 4 == 3:
            body.append(f"LABEL l{i}=$V{i // 2}")
        elif i % 8 == 5:
            body.append(f"ARG A{i}=x")
        else:
            body.append(f"ENV V{i % (lines // 2)}=v{i} W{i}=$V{i // 3}")
    return "FROM scratch\n" + "\n".join(body) + "\n"


def _traced_lines(lines: int, tmp_path) -> int:
    """Python lines executed by a rebuild of `lines` instructions (the first build, untraced,
    imports what a build needs and stores the parse: what is left is the steps)."""
    context = tmp_path / f"ctx{lines}"
    context.mkdir()
    text = _dockerfile(lines)
    count = 0

    def tracer(frame, event, arg):
        nonlocal count
        if event == "line":
            count += 1
        return tracer

    request = BuildRequest(context=str(context), dockerfile_text=text, output=None,
                           cache_dir=str(tmp_path / f"cache{lines}"))
    build(request)
    sys.settrace(tracer)
    try:
        build(request)
    finally:
        sys.settrace(None)
    return count


def test_python_work_per_instruction_does_not_grow_with_the_dockerfile(tmp_path):
    short, long = _traced_lines(SHORT, tmp_path), _traced_lines(LONG, tmp_path)
    # The short build's count includes the fixed cost of a build (cache index, export).
    per_extra = (long - short) / (LONG - SHORT)
    per_short = short / SHORT
    assert per_extra < 1.25 * per_short, (short, long, per_extra, per_short)


@pytest.mark.parametrize("env, key, value, expected", [
    ((), "A", "1", ("A=1",)),
    (("A=1", "B=2"), "C", "3", ("A=1", "B=2", "C=3")),
    (("A=1", "B=2"), "A", "9", ("A=9", "B=2")),
    (("A=1", "B=2", "A=3"), "A", "9", ("A=9", "B=2", "A=3")),
    (("A", "B=x=y"), "B", "z", ("A", "B=z")),
])
def test_with_env_keeps_a_variables_position(env, key, value, expected):
    assert ContainerConfig(env=env).with_env(key, value).env == expected


def test_with_env_after_other_changes_and_on_both_branches():
    """Positions remembered for one config hold for its copies and for configs grown from it
    along different paths."""
    base = ContainerConfig(env=("A=1",)).with_env("B", "2")
    left = replace(base, user="u").with_env("C", "3").with_env("B", "l")
    right = base.with_env("D", "4").with_env("C", "r")
    assert left.env == ("A=1", "B=l", "C=3")
    assert right.env == ("A=1", "B=2", "D=4", "C=r")
    assert base.with_env("A", "0").env == ("A=0", "B=2")
    # Both paths add X, at different places: each finds its own.
    left, right = left.with_env("X", "l"), right.with_env("X", "r")
    assert left.with_env("X", "l2").env == ("A=1", "B=l", "C=3", "X=l2")
    assert right.with_env("X", "r2").env == ("A=1", "B=2", "D=4", "C=r", "X=r2")
    assert ContainerConfig(env=("A=1", "A=2")).with_env("A", "3").env == ("A=3", "A=2")
