"""Which stages a stage needs, as far as the Dockerfile says before anything is built: the
stage its FROM names, and the stages its COPY --from and RUN --mount from= name. Stages that need
nothing of each other can be built at the same time.

The graph under-approximates: a name that holds a variable of the stage's own scope (`--from=$X`
after `ARG X` in the stage) is known only when the stage runs, so it is no edge here and the stage
is `open`; a base image's ONBUILD triggers are not seen at all. Whoever schedules from this graph
must still resolve such names on demand, and must never build a stage this graph does not list:
a stage the target does not need is not built (its errors are not the build's)."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from builder.plan.stages import Plan, Stage
from grammar import instructions as ins
from grammar.errors import DockerfileError
from grammar.expand import expand_word
from grammar.mounts import parse_mount


@dataclass(frozen=True)
class StageGraph:
    """`needs[i]`: the indexes of the stages stage i reads; `open`: the stages whose needs are
    known only once they run."""

    needs: tuple[frozenset[int], ...]
    open: frozenset[int]

    def required(self, target: int) -> frozenset[int]:
        """The target and every stage it needs, directly or not."""
        seen, todo = {target}, [target]
        while todo:
            for needed in self.needs[todo.pop()] - seen:
                seen.add(needed)
                todo.append(needed)
        return frozenset(seen)

    def waves(self, target: int) -> tuple[tuple[int, ...], ...]:
        """The stages the target requires, in dependency order, grouped so that a group's stages
        need only stages of earlier groups (each group can be built at the same time). Stages on
        or behind a cycle are left out: the build refuses the cycle where it closes."""
        left = set(self.required(target))
        done: set[int] = set()
        waves: list[tuple[int, ...]] = []
        while ready := sorted(i for i in left if self.needs[i] <= done):
            waves.append(tuple(ready))
            done.update(ready)
            left.difference_update(ready)
        return tuple(waves)


def stage_graph(plan: Plan, global_args: Mapping[str, str], escape: str,
                is_context: Callable[[str], bool]) -> StageGraph:
    """The graph of `plan`. FROM names are expanded with `global_args` (as the build expands
    them); a name `is_context` accepts is a --build-context, not a stage."""
    needs: list[frozenset[int]] = []
    open_: set[int] = set()
    for stage in plan.stages:
        found: set[int] = set()
        parent = _from_parent(plan, stage, global_args, escape, is_context)
        if parent is not None:
            found.add(parent.index)
        for name in _source_names(stage):
            if "$" in name:
                open_.add(stage.index)
            elif not is_context(name) and (source := plan.source(name)) is not None:
                found.add(source.index)
        needs.append(frozenset(found))
    return StageGraph(tuple(needs), frozenset(open_))


def _from_parent(plan: Plan, stage: Stage, global_args: Mapping[str, str], escape: str,
                 is_context: Callable[[str], bool]) -> Stage | None:
    try:
        name = expand_word(stage.from_.image, global_args, escape)
    except DockerfileError:
        return None  # the build reports it when it reaches this FROM
    return None if is_context(name) else plan.base(name, stage.index)


def _source_names(stage: Stage) -> list[str]:
    """The --from of the stage's COPYs and the from= of its RUNs' mounts, as written."""
    names = []
    for instruction in stage.instructions:
        if type(instruction) is ins.Copy and instruction.from_:
            names.append(instruction.from_)
        elif isinstance(instruction, ins.Run):
            for text in instruction.mounts:
                name = getattr(parse_mount(text), "from_", None)  # checked when parsed
                if name:
                    names.append(name)
    return names
