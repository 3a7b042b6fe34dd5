"""Errors of a build, as opposed to errors of the Dockerfile's text.

A build error is still about a Dockerfile line (the instruction that failed), so it renders
exactly like a parse error: `Dockerfile:7: COPY: "/app.py" not found` and the line.
"""
from __future__ import annotations

import errno
import os

from grammar.errors import DockerfileError
from grammar.instructions import Instruction


class BuildError(DockerfileError):
    """An instruction could not be carried out (exit status 1)."""

    @classmethod
    def at(cls, instruction: Instruction, message: str, source_line: str | None = None,
           hint: str | None = None) -> "BuildError":
        return cls(message, file=instruction.span.file, line=instruction.span.line,
                   end_line=instruction.span.end_line, source_line=source_line, hint=hint)


def describe_os_error(error: OSError) -> tuple[str, str | None]:
    """A failed system call as a message and a hint, for a user who never asked for one: the
    path in full only where it is short enough to read."""
    path = error.filename if isinstance(error.filename, str) else None
    if error.errno == errno.ENAMETOOLONG and path:
        cache, found, inside = path.partition("/snapshots/")
        shown = "/" + inside.partition("/")[2] if found else path
        return (f"a path is too long for this system: {shown[:40]}...{shown[-40:]} "
                f"({len(os.fsencode(path))} bytes as pybuild reads it"
                f"{f' under {cache}/snapshots' if found else ''}; Linux allows 4096)",
                "a --cache-dir with a shorter path leaves more room" if found else None)
    if error.errno == errno.EACCES and path:
        return (f"permission denied: {path}",
                f"pybuild runs as uid {os.getuid()}: make it readable, or leave it out with "
                ".dockerignore")
    return (f"{error.strerror or error}: {path}" if path else str(error.strerror or error)), None


class NotSupported(BuildError):
    """A Dockerfile feature pybuild does not implement (yet): exit status 2, never a silent
    approximation."""


class UsageError(Exception):
    """Bad command-line use (exit status 2)."""
