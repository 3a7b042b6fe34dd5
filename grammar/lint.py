"""Dockerfile checks, named and worded as BuildKit's build checks, so a warning reads the same
from pybuild as from `docker build` and a `# check=skip=...` directive written for Docker works
here too. A pure function of the parsed Dockerfile: no image or context is looked at.
"""
from __future__ import annotations

from dataclasses import dataclass

from grammar import instructions as ins
from grammar.errors import DockerfileError
from grammar.expand import expand_word
from grammar.suggest import suggest
from grammar.words import split_whitespace

# The ARGs BuildKit defines for FROM lines without an ARG instruction.
_AUTOMATIC_ARGS = ("BUILDPLATFORM", "BUILDOS", "BUILDARCH", "BUILDVARIANT", "TARGETPLATFORM",
                   "TARGETOS", "TARGETARCH", "TARGETVARIANT")


@dataclass(frozen=True)
class Finding:
    """A check that failed at a line of the Dockerfile."""

    line: int
    rule: str
    message: str

    def render(self, file: str) -> str:
        return f"{file}:{self.line}: {self.rule}: {self.message}"


def lint(dockerfile: ins.Dockerfile) -> list[Finding]:
    """The findings of every check, in the order of the lines, less the rules the Dockerfile's
    `# check=skip=A,B` (or `skip=all`) directive turns off."""
    skipped = _skipped(dockerfile.directives.check)
    if "all" in skipped:
        return []
    findings: list[Finding] = []
    declared: set[str] = set()  # the ARGs before the first FROM: the ones FROM may use
    shells: list[bool] = []  # per stage so far: whether its SHELL is set
    names: dict[str, int] = {}
    for instruction in dockerfile.instructions:
        line = instruction.span.line
        match instruction:
            case ins.From(image=image, name=name):
                findings += _from_checks(instruction, declared, dockerfile.directives.escape)
                # A stage FROM an earlier one inherits its shell, as its image config does.
                parent = names.get(image.lower(), int(image) if image.isdigit() else None)
                shells.append(parent is not None and parent < len(shells) and shells[parent])
                if name is not None:
                    names[name] = len(shells) - 1
            case ins.Arg() if not shells:
                declared.update(decl.name for decl in instruction.args)
            case ins.Shell() if shells:
                shells[-1] = True
            case ins.Maintainer():
                findings.append(Finding(line, "MaintainerDeprecated",
                                        "Maintainer instruction is deprecated in favor of using "
                                        "label"))
            case ins.Cmd() | ins.Entrypoint() if instruction.command.shell \
                    and not (shells and shells[-1]):
                findings.append(Finding(line, "JSONArgsRecommended",
                                        f"JSON arguments recommended for {instruction.keyword} to "
                                        "prevent unintended behavior related to OS signals"))
    return [finding for finding in findings if finding.rule not in skipped]


def _from_checks(instruction: ins.From, declared: set[str], escape: str) -> list[Finding]:
    """FromAsCasing and StageNameCasing on the words as written; UndefinedArgInFrom on the
    variables of the image and --platform."""
    line = instruction.span.line
    findings = []
    words = split_whitespace(instruction.original)
    keyword = words[0]
    if instruction.name is not None:
        as_word, name = words[-2], words[-1]
        if (keyword.islower() and not as_word.islower()) or (keyword.isupper()
                                                              and not as_word.isupper()):
            findings.append(Finding(line, "FromAsCasing",
                                    f"'{as_word}' and '{keyword}' keywords' casing do not match"))
        if name != name.lower():
            findings.append(Finding(line, "StageNameCasing",
                                    f"Stage name '{name}' should be lowercase"))
    known = declared | set(_AUTOMATIC_ARGS)
    for word in (instruction.image, instruction.platform or ""):
        for name in _variables(word, escape):
            if name not in known:
                close = suggest(name, sorted(known), case_sensitive=True)
                findings.append(Finding(line, "UndefinedArgInFrom",
                                        f"FROM argument '{name}' is not declared"
                                        + (f" (did you mean {close}?)" if close else "")))
                known.add(name)  # once per name and line
    return findings


class _Lookups(dict):
    """An empty scope that remembers the names expansion asked it for."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def get(self, name, default=None):
        if name not in self.names:
            self.names.append(name)
        return default


def _variables(word: str, escape: str) -> list[str]:
    """The variables `word` uses, in order; a word that does not expand has its error reported
    by the build itself, so here it uses the names read before the error."""
    lookups = _Lookups()
    try:
        expand_word(word, lookups, escape)
    except DockerfileError:
        pass
    return lookups.names


def _skipped(check: str | None) -> set[str]:
    """The rules `# check=skip=A,B;error=true` names (BuildKit's syntax; `error` is not
    honoured: a finding stays a warning)."""
    skipped: set[str] = set()
    for part in (check or "").split(";"):
        key, _, value = part.partition("=")
        if key.strip() == "skip":
            skipped.update(rule.strip() for rule in value.split(",") if rule.strip())
    return skipped
