"""builder/plan/graph.py: the stages each stage needs (FROM, COPY --from, RUN --mount from=,
forward references included), the stages a target requires, and the groups of stages that can be
built at the same time."""
from __future__ import annotations

import pytest

from builder.plan.graph import stage_graph
from builder.plan.stages import plan
from grammar.parser import parse


def _graph(text: str, args: dict[str, str] | None = None, contexts: tuple[str, ...] = ()):
    return stage_graph(plan(parse(text)), args or {}, "\\", lambda name: name in contexts)


TWO_BUILDERS = """\
FROM busybox AS a
RUN make a
FROM busybox AS b
RUN make b
FROM busybox
COPY --from=a /a /
COPY --from=b /b /
"""


@pytest.mark.parametrize("text, needs", [
    (TWO_BUILDERS, [set(), set(), {0, 1}]),
    # FROM an earlier stage, by name, case-insensitively
    ("FROM busybox AS Base\nFROM base\n", [set(), {0}]),
    # FROM never names a stage by index nor a later stage: both are images
    ("FROM busybox\nFROM 0\nFROM later\nFROM busybox AS later\n", [set(), set(), set(), set()]),
    # COPY --from names any stage, by index or by a later stage's name
    ("FROM busybox\nCOPY --from=2 / /\nFROM busybox\nCOPY --from=late / /\n"
     "FROM busybox AS late\n", [{2}, {2}, set()]),
    # RUN --mount from= (bind and cache) names stages as COPY --from does
    ("FROM busybox AS x\nFROM busybox AS y\nFROM busybox\n"
     "RUN --mount=from=x,target=/x --mount=type=cache,from=y,target=/y true\n",
     [set(), set(), {0, 1}]),
    # an image, not a stage; ADD has no --from
    ("FROM busybox\nCOPY --from=alpine / /\nADD a /\n", [set()]),
])
def test_needs(text: str, needs: list[set[int]]) -> None:
    assert [set(n) for n in _graph(text).needs] == needs


def test_from_is_expanded_with_the_global_args() -> None:
    text = "ARG B=base\nFROM busybox AS base\nFROM $B\nFROM ${C}\n"
    assert [set(n) for n in _graph(text, {"B": "base", "C": "base"}).needs] == [set(), {0}, {0}]
    assert [set(n) for n in _graph(text, {"B": "busybox"}).needs] == [set(), set(), set()]


def test_a_build_context_of_a_stage_name_is_no_edge() -> None:
    text = "FROM busybox AS a\nFROM a\nCOPY --from=a / /\n"
    assert _graph(text, contexts=("a",)).needs[1] == frozenset()
    assert _graph(text).needs[1] == {0}


def test_a_from_with_a_stage_variable_is_open() -> None:
    graph = _graph("FROM busybox AS a\nFROM busybox\nARG S=a\nCOPY --from=$S / /\n")
    assert graph.needs[1] == frozenset() and graph.open == {1}


@pytest.mark.parametrize("text, target, waves", [
    (TWO_BUILDERS, 2, ((0, 1), (2,))),
    (TWO_BUILDERS, 0, ((0,),)),  # only what the target requires
    # a chain
    ("FROM busybox AS a\nFROM a AS b\nFROM b\n", 2, ((0,), (1,), (2,))),
    # a diamond, with a forward reference
    ("FROM busybox\nCOPY --from=l / /\nCOPY --from=r / /\nFROM busybox AS l\n"
     "COPY --from=base / /\nFROM busybox AS r\nCOPY --from=base / /\nFROM busybox AS base\n",
     0, ((3,), (1, 2), (0,))),
    # a cycle is left out, with what stands behind it; the rest is planned
    ("FROM busybox AS a\nCOPY --from=b / /\nFROM busybox AS b\nCOPY --from=a / /\n"
     "FROM busybox AS c\nFROM busybox\nCOPY --from=a / /\nCOPY --from=c / /\n", 3, ((2,),)),
    ("FROM busybox AS a\nCOPY --from=a / /\n", 0, ()),
])
def test_waves(text: str, target: int, waves: tuple[tuple[int, ...], ...]) -> None:
    assert _graph(text).waves(target) == waves


def test_required_is_transitive() -> None:
    graph = _graph("FROM busybox AS a\nFROM a AS b\nFROM busybox AS c\nFROM b\n")
    assert graph.required(3) == {0, 1, 3}
