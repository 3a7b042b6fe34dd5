"""Errors of a build, as opposed to errors of the Dockerfile's text.

A build error is still about a Dockerfile line (the instruction that failed), so it renders
exactly like a parse error: `Dockerfile:7: COPY: "/app.py" not found` and the line.
"""
from __future__ import annotations

from grammar.errors import DockerfileError
from grammar.instructions import Instruction


class BuildError(DockerfileError):
    """An instruction could not be carried out (exit status 1)."""

    @classmethod
    def at(cls, instruction: Instruction, message: str, source_line: str | None = None,
           hint: str | None = None) -> "BuildError":
        return cls(message, file=instruction.span.file, line=instruction.span.line,
                   end_line=instruction.span.end_line, source_line=source_line, hint=hint)


class NotSupported(BuildError):
    """A Dockerfile feature pybuild does not implement (yet): exit status 2, never a silent
    approximation."""


class UsageError(Exception):
    """Bad command-line use (exit status 2)."""
