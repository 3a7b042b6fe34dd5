"""The checks of FROM lines and stage names (BuildKit's instructions/parse.go and the FROM part
of dockerfile2llb/validations.go)."""
from __future__ import annotations

import platform
from collections.abc import Callable

from grammar import instructions as ins
from grammar.checks.common import AUTOMATIC_ARGS, Finding, Stage, expanded, variables
from grammar.suggest import suggest
from grammar.words import split_whitespace

_RESERVED_NAMES = ("context", "scratch")
# containerd's platforms.Parse: the OS names it knows and the architectures it normalizes.
_OSES = ("aix", "android", "darwin", "dragonfly", "freebsd", "hurd", "illumos", "ios", "js",
         "linux", "nacl", "netbsd", "openbsd", "plan9", "solaris", "wasip1", "windows", "zos")
_ARCHES = {"i386": "386", "386": "386", "x86_64": "amd64", "x86-64": "amd64", "amd64": "amd64",
           "aarch64": "arm64", "arm64": "arm64", "armhf": "arm", "armel": "arm", "arm": "arm",
           "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64", "mips64le": "mips64le",
           "loong64": "loong64", "wasm": "wasm"}
# Values for the automatic platform ARGs: any platform gives the same verdict on a name.
_SAMPLE_PLATFORM = {"PLATFORM": "linux/amd64", "OS": "linux", "ARCH": "amd64", "VARIANT": ""}


def stage_checks(header: tuple[ins.Arg, ...], stages: tuple[Stage, ...], escape: str,
                 valid_reference: Callable[[str], bool] | None) -> list[Finding]:
    findings: list[Finding] = []
    declared = {decl.name for arg in header for decl in arg.args} | set(AUTOMATIC_ARGS)
    seen: set[str] = set()
    for stage in stages:
        start = stage.start
        findings += _casing(start)
        if start.name is not None:
            if start.name in _RESERVED_NAMES:
                findings.append(Finding(start.span.line, "ReservedStageName",
                                        "Stage name should not use the same name as reserved "
                                        f'stage "{start.name}"'))
            if start.name in seen:
                findings.append(Finding(start.span.line, "DuplicateStageName",
                                        f'Duplicate stage name "{start.name}", stage names '
                                        "should be unique"))
            seen.add(start.name)
        findings += _undeclared(start, declared, escape)
        if start.platform is not None:
            findings += _platform(start, escape)
    if valid_reference is not None:
        findings += _default_bases(header, stages, escape, valid_reference)
    return findings


def _casing(start: ins.From) -> list[Finding]:
    """FromAsCasing and StageNameCasing, on the words as written."""
    if start.name is None:
        return []
    line = start.span.line
    words = split_whitespace(start.original)
    keyword, as_word, name = words[0], words[-2], words[-1]
    findings = []
    if (keyword.islower() and not as_word.islower()) or (keyword.isupper()
                                                          and not as_word.isupper()):
        findings.append(Finding(line, "FromAsCasing",
                                f"'{as_word}' and '{keyword}' keywords' casing do not match"))
    if name != name.lower():
        findings.append(Finding(line, "StageNameCasing",
                                f"Stage name '{name}' should be lowercase"))
    return findings


def _undeclared(start: ins.From, declared: set[str], escape: str) -> list[Finding]:
    """UndefinedArgInFrom: a variable of the image or --platform no ARG before the first FROM
    declares, once per name and line."""
    findings = []
    known = set(declared)
    for word in (start.image, start.platform or ""):
        for name in variables(word, escape):
            if name not in known:
                close = suggest(name, sorted(declared), case_sensitive=True)
                findings.append(Finding(start.span.line, "UndefinedArgInFrom",
                                        f"FROM argument '{name}' is not declared"
                                        + (f" (did you mean {close}?)" if close else "")))
                known.add(name)
    return findings


def _platform(start: ins.From, escape: str) -> list[Finding]:
    """RedundantTargetPlatform (`--platform=$TARGETPLATFORM`) and FromPlatformFlagConstDisallowed
    (a constant platform whose OS or architecture the stage name does not mention)."""
    word = start.platform or ""
    marker = "\0target"
    result, names = expanded(word, {"TARGETPLATFORM": marker}, escape)
    if names == ["TARGETPLATFORM"] and result == marker:
        return [Finding(start.span.line, "RedundantTargetPlatform",
                        f"Setting platform to predefined {word} in FROM is redundant as this is "
                        "the default behavior")]
    if names or result is None:
        return []
    parsed = _parse_platform(result)
    if parsed is None or any(part in (start.name or "") for part in parsed):
        return []
    return [Finding(start.span.line, "FromPlatformFlagConstDisallowed",
                    f'FROM --platform flag should not use constant value "{result}"')]


def _parse_platform(text: str) -> tuple[str, str] | None:
    """(os, architecture) as containerd's platforms.Parse reads them; None where it fails (the
    build reports that)."""
    parts = text.lower().split("/")
    if len(parts) == 1:
        if parts[0] in _OSES:
            return parts[0], _ARCHES.get(platform.machine().lower(), "amd64")
        return ("linux", _ARCHES[parts[0]]) if parts[0] in _ARCHES else None
    if len(parts) > 3 or parts[0] not in _OSES or parts[1] not in _ARCHES:
        return None
    return parts[0], _ARCHES[parts[1]]


def _default_bases(header: tuple[ins.Arg, ...], stages: tuple[Stage, ...], escape: str,
                   valid_reference: Callable[[str], bool]) -> list[Finding]:
    """InvalidDefaultArgInFrom: a base image name that, with the global ARGs' defaults alone,
    is empty or not an image reference."""
    values = {name: _SAMPLE_PLATFORM[name.removeprefix("BUILD").removeprefix("TARGET")]
              for name in AUTOMATIC_ARGS}
    for arg in header:
        for decl in arg.args:
            if decl.default is not None:
                value, _ = expanded(decl.default, values, escape)
                if value is None:
                    return []
                values[decl.name] = value
    findings = []
    for stage in stages:
        result, _ = expanded(stage.start.image, values, escape)
        if result is None:
            return findings
        if not result or not valid_reference(result):
            findings.append(Finding(stage.start.span.line, "InvalidDefaultArgInFrom",
                                    f"Default value for ARG {stage.start.image} results in "
                                    "empty or invalid base image name"))
    return findings
