"""What every check module shares: the finding, the stages of a Dockerfile, the variables a word
uses."""
from __future__ import annotations

import re
from dataclasses import dataclass

from grammar import instructions as ins
from grammar.errors import DockerfileError
from grammar.expand import expand_word
from grammar.words import split_whitespace

# The ARGs BuildKit defines for FROM lines without an ARG instruction.
AUTOMATIC_ARGS = ("BUILDPLATFORM", "BUILDOS", "BUILDARCH", "BUILDVARIANT", "TARGETPLATFORM",
                  "TARGETOS", "TARGETARCH", "TARGETVARIANT")
_WORD_BOUNDARY = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


@dataclass(frozen=True)
class Finding:
    """A check that failed at a line of the Dockerfile."""

    line: int
    rule: str
    message: str

    def render(self, file: str) -> str:
        return f"{file}:{self.line}: {self.rule}: {self.message}"

    @property
    def url(self) -> str:
        """The rule's page of BuildKit's reference, as buildx links it."""
        slug = _WORD_BOUNDARY.sub("-", self.rule).lower()
        return f"https://docs.docker.com/go/dockerfile/rule/{slug}/"


@dataclass(frozen=True)
class Stage:
    """A FROM and the instructions up to the next one."""

    start: ins.From
    steps: tuple[ins.Instruction, ...]


def split_stages(dockerfile: ins.Dockerfile) -> tuple[tuple[ins.Arg, ...], tuple[Stage, ...]]:
    """The ARGs before the first FROM, and the stages."""
    header: list[ins.Arg] = []
    stages: list[tuple[ins.From, list[ins.Instruction]]] = []
    for instruction in dockerfile.instructions:
        if isinstance(instruction, ins.From):
            stages.append((instruction, []))
        elif stages:
            stages[-1][1].append(instruction)
        elif isinstance(instruction, ins.Arg):
            header.append(instruction)
    return tuple(header), tuple(Stage(start, tuple(steps)) for start, steps in stages)


def parent_index(stage: Stage, names: dict[str, int], index: int) -> int | None:
    """The earlier stage this one is FROM, by name or number, if any."""
    image = stage.start.image.lower()
    parent = names.get(image, int(image) if image.isdigit() else None)
    return parent if parent is not None and parent < index else None


def keyword_as_written(instruction: ins.Instruction) -> str:
    return split_whitespace(instruction.original)[0]


class _Lookups(dict):
    """An empty scope that remembers the names expansion asked it for."""

    def __init__(self, values: dict[str, str] | None = None) -> None:
        super().__init__()
        self.values = values or {}
        self.names: list[str] = []

    def get(self, name, default=None):
        if name not in self.names:
            self.names.append(name)
        return self.values.get(name, default)


def variables(word: str, escape: str) -> list[str]:
    """The variables `word` uses, in order; a word that does not expand has its error reported
    by the build itself, so here it uses the names read before the error."""
    return expanded(word, {}, escape)[1] if "$" in word else []


def expanded(word: str, values: dict[str, str], escape: str) -> tuple[str | None, list[str]]:
    """`word` expanded with `values` (None where it does not expand), and the names it used."""
    lookups = _Lookups(values)
    try:
        return expand_word(word, lookups, escape), lookups.names
    except DockerfileError:
        return None, lookups.names
