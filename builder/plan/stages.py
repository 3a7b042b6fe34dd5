"""Stages of a Dockerfile: which instructions belong to which stage, and which stage is built."""
from __future__ import annotations

from dataclasses import dataclass

from builder.errors import BuildError
from grammar import instructions as ins
from grammar.errors import DockerfileError


@dataclass(frozen=True)
class Stage:
    index: int
    name: str | None
    from_: ins.From
    instructions: tuple[ins.Instruction, ...]

    @property
    def label(self) -> str:
        """How the build log names the stage: its AS name, else its index."""
        return self.name or f"stage-{self.index}"


@dataclass(frozen=True)
class Plan:
    """The ARGs before the first FROM (usable in FROM lines) and the stages in order."""

    meta_args: tuple[ins.Arg, ...]
    stages: tuple[Stage, ...]

    def base(self, ref: str, before: int) -> Stage | None:
        """The stage a FROM names: an AS name (case-insensitive) of a stage defined before
        stage number `before`. As in BuildKit, neither an index nor a later stage: `FROM 0` is
        the image `0`."""
        return next((s for s in self.stages[:before] if s.name is not None
                     and s.name == ref.lower()), None)

    def source(self, ref: str) -> Stage | None:
        """The stage a COPY --from or a mount's from= names: an AS name or an index, of any
        stage of the file (BuildKit allows a later one; a cycle is refused where it closes)."""
        named = self.base(ref, len(self.stages))
        if named is None and ref.isdigit() and int(ref) < len(self.stages):
            return self.stages[int(ref)]
        return named

    def target(self, name: str | None) -> Stage:
        if name is None:
            return self.stages[-1]
        for stage in self.stages:
            if stage.name == name.lower():
                return stage
        known = ", ".join(s.name for s in self.stages if s.name) or "none"
        raise DockerfileError(f"target stage {name!r} could not be found (stages: {known})")


def plan(dockerfile: ins.Dockerfile) -> Plan:
    """Group instructions into stages; only ARG may come before the first FROM."""
    meta: list[ins.Arg] = []
    stages: list[Stage] = []
    current: list[ins.Instruction] = []
    from_: ins.From | None = None
    for instruction in dockerfile.instructions:
        if isinstance(instruction, ins.From):
            if from_ is not None:
                stages.append(Stage(len(stages), from_.name, from_, tuple(current)))
            from_, current = instruction, []
        elif from_ is None:
            if not isinstance(instruction, ins.Arg):
                raise BuildError.at(instruction, f"{instruction.keyword} before the first FROM: "
                                    "no build stage in current context",
                                    dockerfile.source_line(instruction.span.line))
            meta.append(instruction)
        else:
            current.append(instruction)
    if from_ is None:
        raise DockerfileError("the Dockerfile has no FROM instruction", file=dockerfile.file)
    stages.append(Stage(len(stages), from_.name, from_, tuple(current)))
    seen: set[str] = set()
    for stage in stages:
        if stage.name in seen:
            raise BuildError.at(stage.from_, f"duplicate stage name {stage.name!r}",
                                dockerfile.source_line(stage.from_.span.line))
        if stage.name:
            seen.add(stage.name)
    return Plan(tuple(meta), tuple(stages))
