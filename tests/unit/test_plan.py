"""builder/plan.py: instructions grouped into stages, ARGs before the first FROM, stage names
and indexes as FROM and COPY --from refer to them, and --target."""
from __future__ import annotations

import pytest

from builder.errors import BuildError
from builder.plan.stages import plan
from grammar import instructions as ins
from grammar.errors import DockerfileError
from grammar.parser import parse

MULTI = """\
ARG BASE=alpine
ARG V
FROM $BASE AS Build
RUN make
FROM scratch
COPY --from=build /out /
FROM build AS test
RUN make test
"""


def test_stages_in_order_with_their_instructions() -> None:
    planned = plan(parse(MULTI))
    assert [a.args[0].name for a in planned.meta_args] == ["BASE", "V"]
    assert [(s.index, s.name, s.label) for s in planned.stages] == [
        (0, "build", "build"), (1, None, "stage-1"), (2, "test", "test")]
    assert [[type(i).__name__ for i in s.instructions] for s in planned.stages] == [
        ["Run"], ["Copy"], ["Run"]]
    assert planned.stages[0].from_.image == "$BASE", "FROM is expanded when the stage is built"


@pytest.mark.parametrize("ref, before, found", [
    ("build", 1, 0), ("BUILD", 3, 0), ("0", 1, None), ("1", 2, None), ("build", 0, None),
    ("test", 2, None), ("test", 3, 2), ("alpine", 3, None),
])
def test_from_names_only_earlier_stages_by_name(ref: str, before: int, found: int | None) -> None:
    """As BuildKit: an index, or a later stage's name, in FROM is an image."""
    stage = plan(parse(MULTI)).base(ref, before)
    assert (stage.index if stage else None) == found


@pytest.mark.parametrize("ref, found", [
    ("build", 0), ("TEST", 2), ("0", 0), ("2", 2), ("3", None), ("alpine", None),
])
def test_copy_from_names_any_stage_by_name_or_index(ref: str, found: int | None) -> None:
    stage = plan(parse(MULTI)).source(ref)
    assert (stage.index if stage else None) == found


@pytest.mark.parametrize("target, index", [(None, 2), ("build", 0), ("TEST", 2)])
def test_target(target: str | None, index: int) -> None:
    assert plan(parse(MULTI)).target(target).index == index


def test_an_unknown_target_lists_the_stages() -> None:
    with pytest.raises(DockerfileError, match=r"target stage 'nope' could not be found "
                                              r"\(stages: build, test\)"):
        plan(parse(MULTI)).target("nope")


@pytest.mark.parametrize("text, error, message, line", [
    ("ARG A\n", DockerfileError, "the Dockerfile has no FROM instruction", None),
    ("ARG A\nENV A=1\nFROM scratch\n", BuildError, "ENV before the first FROM", 2),
    ("FROM a AS x\nRUN x\nFROM b AS X\n", BuildError, "duplicate stage name 'x'", 3),
])
def test_malformed_stage_structure(text: str, error: type, message: str,
                                   line: int | None) -> None:
    with pytest.raises(error, match=message) as caught:
        plan(parse(text))
    assert type(caught.value) is error and caught.value.line == line


def test_a_stage_without_instructions_and_one_without_a_name() -> None:
    planned = plan(parse("FROM scratch\n"))
    assert planned.meta_args == () and len(planned.stages) == 1
    assert planned.stages[0].instructions == () and planned.stages[0].label == "stage-0"
    assert isinstance(planned.stages[0].from_, ins.From)
