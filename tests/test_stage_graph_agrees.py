"""The stage graph (builder/plan/graph.py) against real builds: the stages it says a target
requires are exactly the stages the build builds, forward references included, so a scheduler
that builds them ahead never builds a stage the target does not need."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from builder.plan.graph import stage_graph
from builder.plan.stages import plan
from grammar.parser import parse
from tests.support import pybuild

CASES = [
    # two independent builders, an unused stage that would fail, the target last
    ("FROM scratch AS a\nCOPY f /a\nFROM scratch AS b\nCOPY f /b\nFROM scratch AS unused\n"
     "COPY missing /\nFROM scratch\nCOPY --from=a /a /\nCOPY --from=b /b /\n", None),
    # a forward reference, FROM a stage, and a target that is not the last stage
    ("FROM scratch AS a\nCOPY f /a\nFROM scratch AS unused\nCOPY missing /\nFROM scratch AS t\n"
     "COPY --from=late /a /\nFROM a AS late\n", "t"),
    # by index, and a global ARG in FROM
    ("ARG P=a\nFROM scratch AS a\nCOPY f /a\nFROM $P AS c\nFROM scratch\nCOPY --from=1 /a /\n",
     None),
]


@pytest.mark.parametrize("dockerfile, target", CASES)
def test_required_stages_are_the_stages_built(tmp_path: Path, dockerfile: str,
                                              target: str | None) -> None:
    context = tmp_path / "context"
    context.mkdir()
    (context / "f").write_text("f")
    (context / "Dockerfile").write_text(dockerfile)
    planned = plan(parse(dockerfile))
    result = pybuild("--progress", "plain", "-o", str(tmp_path / "out.tar"),
                     *(("--target", target) if target else ()), str(context),
                     env={"PYBUILD_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr
    built = set(re.findall(r"^#\d+ \[(\S+)\] FROM ", result.stderr, re.MULTILINE))
    graph = stage_graph(planned, {"P": "a"}, "\\", lambda name: False)
    required = graph.required(planned.target(target).index)
    assert {planned.stages[i].label for i in required} == built
    assert sorted(i for wave in graph.waves(planned.target(target).index) for i in wave) == \
        sorted(required)
