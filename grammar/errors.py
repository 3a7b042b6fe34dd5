"""The one error type of the front end: a message tied to a place in a Dockerfile."""
from __future__ import annotations

from dataclasses import dataclass

from grammar.lines import physical_lines

# Lines of the Dockerfile shown before and after the failing instruction.
CONTEXT_LINES = 2
_RULE = "-" * 20


@dataclass(frozen=True)
class Span:
    """Where an instruction stands: file name and its first and last physical line (1-based)."""

    file: str
    line: int
    end_line: int


class DockerfileError(Exception):
    """Bad Dockerfile input. Carries its location so every front end renders it the same way;
    with the file's lines (`source`) it renders as BuildKit's excerpt of the Dockerfile."""

    def __init__(self, message: str, *, file: str = "Dockerfile", line: int | None = None,
                 column: int | None = None, source_line: str | None = None,
                 hint: str | None = None, end_line: int | None = None,
                 source: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        self.source_line = source_line
        self.hint = hint
        self.end_line = end_line
        self.source = source

    def _replaced(self, **changes) -> DockerfileError:
        fields = {"file": self.file, "line": self.line, "column": self.column,
                  "source_line": self.source_line, "hint": self.hint, "end_line": self.end_line,
                  "source": self.source}
        return type(self)(self.message, **(fields | changes))

    def located(self, span: Span, source_line: str | None = None) -> DockerfileError:
        """The same error, placed at an instruction (errors raised by helpers carry no place)."""
        if self.line is not None:
            return self
        return self._replaced(file=span.file, line=span.line, end_line=span.end_line,
                              source_line=source_line)

    def in_source(self, text: str, file: str) -> DockerfileError:
        """The same error with the whole text of the Dockerfile `file` it is about, so that it
        shows the lines around its own; an error about another file, or no line, stays as it is."""
        if self.file != file or self.line is None:
            return self
        return self._replaced(source=tuple(line.rstrip("\r") for line in physical_lines(text)))

    def render(self) -> str:
        """`Dockerfile:7:5: message`, then the Dockerfile around line 7 with the line marked and
        a caret under the column; without the file's text, only the line and the caret."""
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        text = f"{where}: {self.message}"
        if self.hint:
            text += f" ({self.hint})"
        if self.line is not None and 0 < self.line <= len(self.source):
            return text + "\n" + excerpt(self.source, self.line, self.end_line or self.line,
                                         self.column)
        if self.source_line is not None:
            text += f"\n  {self.line} | {self.source_line}"
            if self.column is not None:
                pad = len(f"  {self.line} | ") + self.column - 1
                text += "\n" + " " * pad + "^"
        return text

    def __str__(self) -> str:
        return self.render()


def excerpt(lines: tuple[str, ...], first: int, last: int, column: int | None = None) -> str:
    """Lines `first`..`last` (1-based) of a file marked ` >>> ` between a few lines of context,
    numbered, as BuildKit shows a failing instruction; a caret under `column` of line `first`."""
    last = min(max(last, first), len(lines))
    start, end = max(first - CONTEXT_LINES, 1), min(last + CONTEXT_LINES, len(lines))
    width = max(len(str(end)), 4)
    rows = [_RULE]
    for number in range(start, end + 1):
        marker = ">>>" if first <= number <= last else "   "
        rows.append(f"{number:>{width}} | {marker} {lines[number - 1]}".rstrip())
        if number == first and column is not None:
            rows.append(f"{'':>{width}} |     " + " " * (column - 1) + "^")
    rows.append(_RULE)
    return "\n".join(rows)
