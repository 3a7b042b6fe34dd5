"""`pybuild --call=check|outline|targets` (`--check` for check): what buildx's `--call` does
without a build: run the Dockerfile checks, or list the stages and build args, printed on
stdout as buildx prints them."""
from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from builder.cli.options import EXIT_FAILURE
from grammar import instructions as ins
from grammar.errors import DockerfileError, excerpt

if TYPE_CHECKING:
    from grammar.lint import Finding
    from grammar.outline import Outline, Target

CALLS = ("build", "check", "outline", "targets")


def call_command(options: argparse.Namespace, build_args: dict[str, str | None]) -> int:
    """Exit status 1 when a check finds something (as buildx), or the Dockerfile is bad."""
    try:
        text, name, path = _dockerfile(options)
    except DockerfileError as error:
        return _failed(error)
    try:
        from grammar.parser import parse
        dockerfile = parse(text, name)
        if options.call == "check":
            from builder.checks import dockerfile_checks
            findings = dockerfile_checks(dockerfile, options.context, path, build_args)
            print(check_report(dockerfile, findings), end="")
            return EXIT_FAILURE if findings else 0
        from grammar.outline import outline, targets
        if options.call == "targets":
            print(targets_table(targets(dockerfile)), end="")
        else:
            print(outline_text(outline(dockerfile, options.target, build_args)), end="")
        return 0
    except DockerfileError as error:
        return _failed(error.in_source(text, name))


def _failed(error: DockerfileError) -> int:
    print(f"ERROR: {error.render()}", file=sys.stderr)
    return EXIT_FAILURE


def _dockerfile(options: argparse.Namespace) -> tuple[str, str, str | None]:
    """The Dockerfile's text, its name, and its path as load_ignore takes it."""
    if options.file == "-":
        return sys.stdin.read(), "Dockerfile", "-"
    path = options.file or os.path.join(options.context, "Dockerfile")
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as handle:
            return handle.read(), os.path.basename(path), options.file
    except OSError as error:
        raise DockerfileError(f"cannot read the Dockerfile: {error.strerror}: {path}",
                              file=os.path.basename(path)) from None


def check_report(dockerfile: ins.Dockerfile, findings: list[Finding]) -> str:
    """buildx's `--call=check` text: a count, then each warning with its rule's URL, its
    message and the Dockerfile around its line."""
    if not findings:
        return "Check complete, no warnings found.\n"
    count = "1 warning has been found!" if len(findings) == 1 \
        else f"{len(findings)} warnings have been found!"
    parts = [f"Check complete, {count}\n"]
    for finding in findings:
        parts.append(f"\nWARNING: {finding.rule} - {finding.url}\n{finding.message}\n"
                     f"{dockerfile.file}:{finding.line}\n"
                     f"{excerpt(dockerfile.lines, finding.line, finding.line)}\n")
    return "".join(parts)


def targets_table(stages: tuple[Target, ...]) -> str:
    rows = [("TARGET", "DESCRIPTION")]
    for target in stages:
        name = target.name
        if target.default:
            name = f"{name} (default)" if name else "(default)"
        rows.append((name, target.description))
    return _columns(rows, 1)


def outline_text(outline: Outline) -> str:
    """The target, its description and its build args; a part with nothing is left out."""
    text = ""
    if outline.name or outline.description:
        rows = [("TARGET:", outline.name or "(default)")]
        rows += [("DESCRIPTION:", outline.description)] if outline.description else []
        text += _columns(rows, 1) + "\n"
    if outline.args:
        rows = [("BUILD ARG", "VALUE", "DESCRIPTION")]
        rows += [(arg.name, arg.value, arg.description) for arg in outline.args]
        text += _columns(rows, 3) + "\n"
    return text


def _columns(rows: list[tuple[str, ...]], padding: int) -> str:
    """Go's text/tabwriter (minwidth 0, padchar ' '): every cell but a row's last padded to its
    column's widest cell plus `padding`."""
    widths = [max(len(row[i]) for row in rows) + padding for i in range(len(rows[0]) - 1)]
    return "".join("".join(cell.ljust(width) for cell, width in zip(row, widths)) + row[-1]
                   + "\n" for row in rows)
