"""Typed, frozen Dockerfile instructions: what the parser produces and the builder consumes.

Values are kept as written (unexpanded): variable expansion depends on the ARG/ENV scope in force
when the builder reaches the instruction, so it happens there, not here.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from grammar.errors import Span


@dataclass(frozen=True)
class Heredoc:
    """A here-document body lifted from the lines after its instruction."""

    name: str
    content: str
    expand: bool
    chomp: bool
    fd: int | None = None

    def text(self) -> str:
        """The body as the consumer sees it: `<<-` strips leading tabs from every line."""
        if not self.chomp:
            return self.content
        return "".join(line.lstrip("\t") for line in self.content.splitlines(keepends=True))


@dataclass(frozen=True)
class Command:
    """A command line: exec form (JSON array) or shell form (one string run through SHELL)."""

    args: tuple[str, ...]
    shell: bool


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: str


@dataclass(frozen=True)
class ArgDecl:
    name: str
    default: str | None


@dataclass(frozen=True)
class Instruction:
    """Fields shared by every instruction: where it is and its logical line as written."""

    span: Span
    original: str

    @property
    def keyword(self) -> str:
        return KEYWORD_OF[type(self)]


@dataclass(frozen=True)
class From(Instruction):
    image: str
    name: str | None = None
    platform: str | None = None


@dataclass(frozen=True)
class Run(Instruction):
    command: Command
    heredocs: tuple[Heredoc, ...] = ()
    mounts: tuple[str, ...] = ()
    network: str | None = None
    security: str | None = None
    devices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Cmd(Instruction):
    command: Command


@dataclass(frozen=True)
class Entrypoint(Instruction):
    command: Command


@dataclass(frozen=True)
class Label(Instruction):
    pairs: tuple[KeyValue, ...]


@dataclass(frozen=True)
class Maintainer(Instruction):
    name: str


@dataclass(frozen=True)
class Expose(Instruction):
    ports: tuple[str, ...]


@dataclass(frozen=True)
class Env(Instruction):
    pairs: tuple[KeyValue, ...]


@dataclass(frozen=True)
class Copy(Instruction):
    """COPY; also the base of ADD, which adds archive extraction and remote sources."""

    sources: tuple[str, ...]
    dest: str
    heredocs: tuple[Heredoc, ...] = ()
    from_: str | None = None
    chown: str | None = None
    chmod: str | None = None
    link: bool = False
    parents: bool = False
    excludes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Add(Copy):
    keep_git_dir: bool = False
    checksum: str | None = None
    unpack: bool | None = None


@dataclass(frozen=True)
class Volume(Instruction):
    paths: tuple[str, ...]


@dataclass(frozen=True)
class User(Instruction):
    user: str


@dataclass(frozen=True)
class Workdir(Instruction):
    path: str


@dataclass(frozen=True)
class Arg(Instruction):
    args: tuple[ArgDecl, ...]


@dataclass(frozen=True)
class Onbuild(Instruction):
    """ONBUILD: the trigger is parsed (so errors show now) and kept verbatim for the image config."""

    trigger: Instruction
    expression: str


@dataclass(frozen=True)
class Stopsignal(Instruction):
    signal: str


@dataclass(frozen=True)
class Healthcheck(Instruction):
    """HEALTHCHECK; `command is None` means NONE. Durations in nanoseconds, 0 = inherit."""

    command: Command | None
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0


@dataclass(frozen=True)
class Shell(Instruction):
    args: tuple[str, ...]


KEYWORD_OF: dict[type, str] = {
    From: "FROM", Run: "RUN", Cmd: "CMD", Entrypoint: "ENTRYPOINT", Label: "LABEL",
    Maintainer: "MAINTAINER", Expose: "EXPOSE", Env: "ENV", Copy: "COPY", Add: "ADD",
    Volume: "VOLUME", User: "USER", Workdir: "WORKDIR", Arg: "ARG", Onbuild: "ONBUILD",
    Stopsignal: "STOPSIGNAL", Healthcheck: "HEALTHCHECK", Shell: "SHELL",
}


@dataclass(frozen=True)
class Directives:
    escape: str = "\\"
    syntax: str | None = None
    check: str | None = None


@dataclass(frozen=True)
class Dockerfile:
    """A parsed Dockerfile: its directives and its instructions in order."""

    file: str
    directives: Directives
    instructions: tuple[Instruction, ...] = field(default_factory=tuple)
    lines: tuple[str, ...] = ()

    def source_line(self, line: int) -> str:
        """The physical line `line` (1-based), for error excerpts."""
        return self.lines[line - 1] if 0 < line <= len(self.lines) else ""
