"""What `--call=targets` and `--call=outline` show of a Dockerfile, as BuildKit's frontend
gathers it: the stages with their description comments, and the build args a target uses with
their values and descriptions. Pure functions of the parsed Dockerfile and the build args."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from grammar import instructions as ins
from grammar.checks.common import Stage, expanded, parent_index, split_stages, variables
from grammar.checks.text import doc_comment
from grammar.errors import DockerfileError
from grammar.mounts import BindMount, CacheMount, MountError, parse_mount


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    default: bool


@dataclass(frozen=True)
class BuildArg:
    name: str
    value: str
    description: str
    line: int


@dataclass(frozen=True)
class Outline:
    name: str
    description: str
    args: tuple[BuildArg, ...]


def targets(dockerfile: ins.Dockerfile) -> tuple[Target, ...]:
    """Every stage, the last one the default."""
    _, stages = split_stages(dockerfile)
    return tuple(Target(stage.start.name or "", _description(dockerfile, stage),
                        index == len(stages) - 1) for index, stage in enumerate(stages))


def outline(dockerfile: ins.Dockerfile, target: str | None,
            build_args: Mapping[str, str | None]) -> Outline:
    """The target stage (default the last) and the build args it and the stages it needs use,
    in the order of their lines. Raises DockerfileError for a target that is not a stage."""
    header, stages = split_stages(dockerfile)
    if not stages:
        raise DockerfileError("dockerfile contains no stages to build", file=dockerfile.file)
    names = {stage.start.name: i for i, stage in enumerate(stages) if stage.start.name}
    if target is None:
        index = len(stages) - 1
    elif target.lower() in names:
        index = names[target.lower()]
    else:
        raise DockerfileError(f'target stage "{target}" could not be found',
                              file=dockerfile.file)
    scope = _Scope(dockerfile, build_args)
    for arg in header:
        scope.declare_global(arg)
    seen: dict[str, BuildArg] = {}
    for number in _needed(stages, names, index):
        for arg in scope.stage_args(stages[number]):
            seen.setdefault(arg.name, arg)
    return Outline(stages[index].start.name or "", _description(dockerfile, stages[index]),
                   tuple(sorted(seen.values(), key=lambda arg: arg.line)))


def _description(dockerfile: ins.Dockerfile, stage: Stage) -> str:
    return doc_comment(dockerfile, stage.start, stage.start.name or "")


def _needed(stages: tuple[Stage, ...], names: dict[str, int], index: int) -> list[int]:
    """`index` and the stages it needs (its base, COPY --from and RUN --mount from= stages),
    each once, the target first."""
    order: list[int] = []
    pending = [index]
    while pending:
        number = pending.pop(0)
        if number in order:
            continue
        order.append(number)
        stage = stages[number]
        parent = parent_index(stage, names, number)
        pending += [parent] if parent is not None else []
        for step in stage.steps:
            for name in _sources(step):
                ref = names.get(name.lower(), int(name) if name.isdigit() else None)
                if ref is not None and ref < len(stages):
                    pending.append(ref)
    return order


def _sources(step: ins.Instruction) -> list[str]:
    if isinstance(step, ins.Copy) and step.from_:
        return [step.from_]
    if isinstance(step, ins.Run):
        froms = []
        for text in step.mounts:
            try:
                mount = parse_mount(text)
            except MountError:
                continue
            if isinstance(mount, (BindMount, CacheMount)) and mount.from_:
                froms.append(mount.from_)
        return froms
    return []


class _Scope:
    """The build args seen so far: the global ones (with the globals their defaults use) and,
    per stage, the stage's own."""

    def __init__(self, dockerfile: ins.Dockerfile, build_args: Mapping[str, str | None]) -> None:
        self.dockerfile = dockerfile
        self.escape = dockerfile.directives.escape
        self.build_args = {k: v for k, v in build_args.items() if v is not None}
        self.values: dict[str, str] = {}
        self.globals: dict[str, BuildArg] = {}
        self.uses: dict[str, list[str]] = {}

    def declare_global(self, arg: ins.Arg) -> None:
        for decl in arg.args:
            value, used = self._value(decl, self.values)
            self.uses[decl.name] = used
            if value is not None:
                self.values[decl.name] = value
            self.globals[decl.name] = self._arg(arg, decl.name, value)

    def stage_args(self, stage: Stage) -> list[BuildArg]:
        """The globals its FROM uses (with those their defaults use), then its ARGs."""
        words = (stage.start.image, stage.start.platform or "")
        used = [n for w in words for n in variables(w, self.escape) if n in self.values]
        args = [self.globals[name] for name in self._with_uses(used)]
        values: dict[str, str] = {}
        for step in stage.steps:
            if not isinstance(step, ins.Arg):
                continue
            for decl in step.args:
                if decl.default is None and decl.name not in self.build_args \
                        and decl.name in self.values:
                    args.append(self.globals[decl.name])
                    continue
                value, _ = self._value(decl, values)
                if value is not None:
                    values[decl.name] = value
                args.append(self._arg(step, decl.name, value))
        return args

    def _value(self, decl: ins.ArgDecl, values: dict[str, str]) -> tuple[str | None, list[str]]:
        if decl.name in self.build_args:
            return self.build_args[decl.name], []
        if decl.default is None:
            return None, []
        return expanded(decl.default, values, self.escape)

    def _with_uses(self, names: list[str]) -> list[str]:
        out: list[str] = []
        while names:
            name = names.pop(0)
            if name not in out and name in self.globals:
                out.append(name)
                names += self.uses.get(name, [])
        return out

    def _arg(self, arg: ins.Arg, name: str, value: str | None) -> BuildArg:
        return BuildArg(name, value or "", doc_comment(self.dockerfile, arg, name),
                        arg.span.line)
