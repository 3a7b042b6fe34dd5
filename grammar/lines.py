"""Physical lines and line continuations, read the way BuildKit's scanner reads them.

The grammar, the heredoc pass and the joining of an instruction's text all need the same answer
to "does this line continue?", so the rule lives here once. BuildKit's rule is a regular
expression on each physical line: the escape character at its end (blanks after it allowed)
continues the line unless the character before it is the escape character too (`foo \\` ends
the line). Blank and comment lines inside a continuation are dropped.
"""
from __future__ import annotations

import functools
import re

from grammar.words import SPACES

BOM = "\ufeff"
# What an otherwise blank line may hold, as a regex class: Go's unicode.IsSpace less the newline.
BLANK = "[" + "".join(f"\\u{ord(ch):04x}" for ch in SPACES if ch != "\n") + "]"


def physical_lines(text: str) -> list[str]:
    """The file split at `\\n`, a leading byte-order mark dropped. Each line keeps a trailing
    `\\r`: heredoc bodies are taken verbatim, as BuildKit takes them."""
    lines = text.removeprefix(BOM).split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def continuation_regex(escape: str) -> str:
    """A continuation in `\\n`-separated text: the escape character not preceded by another,
    optional blanks, the newline, then all the blank or comment lines that follow (possessively:
    a lookahead after it must not see one of them)."""
    esc = re.escape(escape)
    return rf"(?<!{esc}){esc}[ \t]*\n(?:{BLANK}*(?:#[^\n]*)?\n)*+"


@functools.cache
def continuation(escape: str) -> re.Pattern[str]:
    return re.compile(continuation_regex(escape))


@functools.cache
def _line_end(escape: str) -> re.Pattern[str]:
    esc = re.escape(escape)
    return re.compile(rf"(?:(?<=[^{esc}])|^){esc}[ \t]*$")


def is_comment(line: str) -> bool:
    return line.lstrip(SPACES).startswith("#")


def is_blank(line: str) -> bool:
    return not line.strip(SPACES)


def logical_line(lines: list[str], start: int, escape: str) -> tuple[str, int]:
    """The instruction text that begins on `lines[start]` (0-based), joined as BuildKit joins
    it (first line left-trimmed, later lines kept as they are), and the index of its last
    physical line."""
    end = _line_end(escape)
    text, continued = end.subn("", lines[start].lstrip(SPACES))
    index = start
    while continued and index + 1 < len(lines):
        index += 1
        line = lines[index]
        if is_comment(line) or is_blank(line):
            continue
        line, continued = end.subn("", line)
        text += line
    return text, index


def end_dangling_continuation(lines: list[str], escape: str) -> list[str]:
    """The lines with a continuation at the end of the file removed: it continues into nothing,
    and Docker ends the instruction there. Blank, comment and escape-only lines it would have
    run into go too, so that no continuation is left to swallow the final newline."""
    kept = list(lines)
    end = _line_end(escape)
    while True:
        while kept and (is_blank(kept[-1]) or is_comment(kept[-1])):
            kept.pop()
        if not kept:
            return kept
        kept[-1], continued = end.subn("", kept[-1])
        if not continued or not is_blank(kept[-1]):
            return kept
        kept.pop()
