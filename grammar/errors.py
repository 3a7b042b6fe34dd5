"""The one error type of the front end: a message tied to a place in a Dockerfile."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Span:
    """Where an instruction stands: file name and its first and last physical line (1-based)."""

    file: str
    line: int
    end_line: int


class DockerfileError(Exception):
    """Bad Dockerfile input. Carries its location so every front end renders it the same way."""

    def __init__(self, message: str, *, file: str = "Dockerfile", line: int | None = None,
                 column: int | None = None, source_line: str | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        self.source_line = source_line
        self.hint = hint

    def located(self, span: Span, source_line: str | None = None) -> "DockerfileError":
        """The same error, placed at an instruction (errors raised by helpers carry no place)."""
        if self.line is not None:
            return self
        return type(self)(self.message, file=span.file, line=span.line, column=self.column,
                          source_line=source_line, hint=self.hint)

    def render(self) -> str:
        """`Dockerfile:7:5: message`, then the offending line and a caret under the column."""
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        text = f"{where}: {self.message}"
        if self.hint:
            text += f" ({self.hint})"
        if self.source_line is not None:
            text += f"\n  {self.line} | {self.source_line}"
            if self.column is not None:
                pad = len(f"  {self.line} | ") + self.column - 1
                text += "\n" + " " * pad + "^"
        return text

    def __str__(self) -> str:
        return self.render()
