"""The checks of the instructions inside stages (the dispatch part of BuildKit's
dockerfile2llb): what a stage inherits from the stage it is FROM (SHELL, WORKDIR, variables) is
followed through the file; what an image outside it holds is not known, so the checks that need
it assume the least."""
from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from grammar import instructions as ins
from grammar.checks.common import (Finding, Stage, expanded, keyword_as_written, parent_index,
                                   variables)
from grammar.suggest import suggest
from grammar.words import split_whitespace

_SECRET = re.compile(r"(?i)(?:_|^)(?:apikey|auth|credential|credentials|key|password|pword|"
                     r"passwd|secret|token)(?:_|$)")
_NOT_SECRET = re.compile(r"(?i)(?:_|^)(?:public|file|version)(?:_|$)")
# Build args BuildKit reads for itself: never in the environment, never reported.
_NOT_ENV = frozenset({"BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"})
_ONCE_PER_STAGE = (ins.Cmd, ins.Entrypoint, ins.Healthcheck)


# A hint compares the name with every variable: past this many in a stage, a Dockerfile of
# thousands of undefined names would cost the square of its length (tests/test_step_scaling.py).
_MOST_HINTS = 16


@dataclass
class _StageState:
    """What the checks remember of a stage while walking it; a later stage FROM it starts with
    a copy. `variables` is None where the base image's environment is unknown."""

    shell: bool = False
    workdir: bool = False
    variables: set[str] | None = field(default_factory=lambda: {"PATH"})
    last: dict[type, int] = field(default_factory=dict)
    hinted: int = 0  # UndefinedVar findings given a "did you mean" hint

    def child(self) -> _StageState:
        names = None if self.variables is None else set(self.variables)
        return _StageState(self.shell, self.workdir, names)


def step_checks(stages: tuple[Stage, ...], escape: str,
                ignored: Callable[[str], bool] | None) -> list[Finding]:
    findings: list[Finding] = []
    states: list[_StageState] = []
    names: dict[str, int] = {}
    for index, stage in enumerate(stages):
        parent = parent_index(stage, names, index)
        if parent is not None:
            state = states[parent].child()
        elif stage.start.image == "scratch":
            state = _StageState()
        else:
            state = _StageState(variables=None)
        for step in stage.steps:
            findings += _step(step, state, escape, ignored)
        states.append(state)
        if stage.start.name is not None:
            names[stage.start.name] = index
    return findings


def _step(step: ins.Instruction, state: _StageState, escape: str,
          ignored: Callable[[str], bool] | None) -> list[Finding]:
    line = step.span.line
    keyword = keyword_as_written(step)
    findings = _undefined(step, state, escape)
    if isinstance(step, _ONCE_PER_STAGE):
        kind = type(step)
        if kind in state.last:
            findings.append(Finding(state.last[kind], "MultipleInstructionsDisallowed",
                                    f"Multiple {keyword} instructions should not be used in the "
                                    "same stage because only the last one will be used"))
        state.last[kind] = line
    match step:
        case ins.Maintainer():
            findings.append(Finding(line, "MaintainerDeprecated",
                                    "Maintainer instruction is deprecated in favor of using "
                                    "label"))
        case ins.Shell():
            state.shell = True
        case ins.Cmd() | ins.Entrypoint() if step.command.shell and not state.shell:
            findings.append(Finding(line, "JSONArgsRecommended",
                                    f"JSON arguments recommended for {keyword} to prevent "
                                    "unintended behavior related to OS signals"))
        case ins.Env() | ins.Label():
            if "=" not in split_whitespace(step.original)[1]:
                findings.append(Finding(line, "LegacyKeyValueFormat",
                                        f'"{keyword} key=value" should be used instead of '
                                        f'legacy "{keyword} key value" format'))
        case ins.Workdir():
            findings += _workdir(step, state, escape)
        case ins.Expose():
            findings += _expose(step, escape)
        case ins.Copy() if ignored is not None and step.from_ is None:
            findings += _ignored_sources(step, escape, ignored)
    if isinstance(step, (ins.Arg, ins.Env)):
        keys = [d.name for d in step.args] if isinstance(step, ins.Arg) \
            else [p.key for p in step.pairs]
        findings += [Finding(line, "SecretsUsedInArgOrEnv",
                             f"Do not use ARG or ENV instructions for sensitive data "
                             f'({keyword.upper()} "{key}")')
                     for key in keys if _SECRET.search(key) and not _NOT_SECRET.search(key)]
    return findings


def _expanded_words(step: ins.Instruction) -> list[str]:
    """The words BuildKit expands in `step` with the stage's variables (ARG defaults aside)."""
    match step:
        case ins.Env() | ins.Label():
            return [word for pair in step.pairs for word in (pair.key, pair.value)]
        case ins.Copy():
            sources = [] if step.heredocs else list(step.sources)
            return sources + [step.dest] + [w for w in (step.chown, step.chmod) if w]
        case ins.Workdir():
            return [step.path]
        case ins.User():
            return [step.user]
        case ins.Expose():
            return list(step.ports)
        case ins.Volume():
            return list(step.paths)
        case ins.Stopsignal():
            return [step.signal]
    return []


def _undefined(step: ins.Instruction, state: _StageState, escape: str) -> list[Finding]:
    """UndefinedVar: a variable that neither an ARG nor an ENV of the stage (or of the stages it
    is FROM) defines. An ARG's default is expanded before the ARG defines its name; the words
    of an ENV before any of its names is defined, as in BuildKit."""
    known = state.variables
    findings: list[Finding] = []
    reported: set[str] = set()

    def check(word: str) -> None:
        for name in variables(word, escape):
            if known is not None and name not in known and name not in reported \
                    and name not in _NOT_ENV:
                reported.add(name)
                close = None
                if state.hinted < _MOST_HINTS:
                    state.hinted += 1
                    close = suggest(name, sorted(known), case_sensitive=True)
                findings.append(Finding(step.span.line, "UndefinedVar",
                                        f"Usage of undefined variable '${name}'"
                                        + (f" (did you mean ${close}?)" if close else "")))

    if isinstance(step, ins.Arg):
        for decl in step.args:
            if decl.default is not None:
                check(decl.default)
            if known is not None:
                known.add(decl.name)
        return findings
    for word in _expanded_words(step):
        check(word)
    if isinstance(step, ins.Env) and known is not None:
        known.update(pair.key for pair in step.pairs)
    return findings


def _workdir(step: ins.Workdir, state: _StageState, escape: str) -> list[Finding]:
    """WorkdirRelativePath: the first WORKDIR of a stage chain is relative, so it depends on the
    base image's."""
    if state.workdir:
        return []
    state.workdir = True
    path, names = expanded(step.path, {}, escape)
    if names or path is None or path.startswith("/"):
        return []
    return [Finding(step.span.line, "WorkdirRelativePath",
                    f'Relative workdir "{path}" can have unexpected results if the base image '
                    "changes")]


def _expose(step: ins.Expose, escape: str) -> list[Finding]:
    """ExposeProtoCasing and ExposeInvalidFormat, per port as written (`[ip:]host:port/proto`)."""
    findings = []
    for raw in step.ports:
        port, names = expanded(raw, {}, escape)
        if names or port is None:
            continue
        parts = port.split(":")
        _, _, proto = parts[-1].partition("/")
        if proto != proto.lower():
            findings.append(Finding(step.span.line, "ExposeProtoCasing",
                                    f"Defined protocol '{port}' in EXPOSE instruction should be "
                                    "lowercase"))
        if len(parts) > 1:
            findings.append(Finding(step.span.line, "ExposeInvalidFormat",
                                    "EXPOSE instruction should not define an IP address or "
                                    f"host-port mapping, found '{port}'"))
    return findings


def _ignored_sources(step: ins.Copy, escape: str,
                     ignored: Callable[[str], bool]) -> list[Finding]:
    """CopyIgnoredFile: a source of the build context that its .dockerignore leaves out."""
    if step.heredocs:
        return []
    verb = "Add" if isinstance(step, ins.Add) else "Copy"
    findings = []
    for raw in step.sources:
        source, names = expanded(raw, {}, escape)
        if names or source is None or "://" in source or source.startswith("git@"):
            continue
        source = posixpath.normpath(source) if source else "."
        if ignored(source):
            findings.append(Finding(step.span.line, "CopyIgnoredFile",
                                    f'Attempting to {verb} file "{source}" that is excluded by '
                                    ".dockerignore"))
    return findings
