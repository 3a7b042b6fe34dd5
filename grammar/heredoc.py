"""Here-documents: lifted out of the text before lexing.

A heredoc body ends at a line equal to a delimiter the instruction itself chose (`<<EOF`), which no
regular lexer can recognise, so this pass reads the file as BuildKit's parser does: logical line
by logical line, and after a RUN, COPY or ADD (also as an ONBUILD trigger) with `<<WORD` markers
it takes the following lines as their bodies, and blanks those lines so line numbers hold.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from grammar.errors import DockerfileError
from grammar.instructions import Heredoc
from grammar.lines import is_blank, is_comment, logical_line
from grammar.words import SPACES, WHITESPACE

# A marker word: optional fd, `<<`, optional `-`, the delimiter (Go's `\s` and `\d` are ASCII).
_MARKER = re.compile(r"([0-9]*)<<(-?)[\t\n\f\r ]*([^<]*)")
_KEYWORDS = {"RUN", "COPY", "ADD"}
# The blanks BuildKit's lexer keeps in the same word after `<<` (`<< EOF` is a marker).
_MARKER_BLANKS = re.compile(r"[\t\r ]*")


@dataclass(frozen=True)
class Marker:
    """What a `<<WORD` word says about its heredoc."""

    name: str
    expand: bool
    chomp: bool
    fd: int | None


@dataclass(frozen=True)
class Lifted:
    """The heredocs of one instruction and the last line they occupy (their terminator)."""

    heredocs: tuple[Heredoc, ...]
    end_line: int


def lift_heredocs(raw: list[str], escape: str, file: str) -> tuple[list[str], dict[int, Lifted]]:
    """Returns the lines (without `\\r`) with heredoc bodies blanked, and the heredocs keyed by the
    1-based line on which their instruction starts. `raw` lines keep their `\\r`, and so do the
    bodies, as in BuildKit."""
    lines = [line.rstrip("\r") for line in raw]
    out = list(lines)
    found: dict[int, Lifted] = {}
    i = 0
    while i < len(lines):
        if is_blank(lines[i]) or is_comment(lines[i]):
            i += 1
            continue
        start = i
        text, i = logical_line(lines, i, escape)
        heredocs = []
        for marker in _markers(text):
            body: list[str] = []
            while True:
                i += 1
                if i >= len(lines):
                    raise DockerfileError(f"unterminated heredoc {marker.name!r}", file=file,
                                          line=start + 1, column=_column(lines[start], marker.name),
                                          source_line=lines[start])
                out[i] = ""
                if (lines[i].lstrip("\t") if marker.chomp else lines[i]) == marker.name:
                    break
                body.append(raw[i] + "\n")
            heredocs.append(Heredoc(name=marker.name, content="".join(body), expand=marker.expand,
                                    chomp=marker.chomp, fd=marker.fd))
        if heredocs:
            found[start + 1] = Lifted(tuple(heredocs), i + 1)
        i += 1
    return out, found


def _column(line: str, name: str) -> int | None:
    """The 1-based column of the `<<` that opens heredoc `name` on `line`, if it is there."""
    found = re.search(rf"<<-?[\"']?{re.escape(name)}", line)
    return found.start() + 1 if found else None


def parse_marker(word: str) -> Marker | None:
    """BuildKit's ParseHeredoc: the marker a word is, or None. The delimiter loses its quotes and
    escapes; any quoting in it turns off expansion of the body."""
    match = _MARKER.fullmatch(word)
    if not match:
        return None
    fd, dash, delimiter = match.groups()
    name = _unquote(delimiter, keep_quotes=False)
    if not name:
        return None
    quotes = _unquote(delimiter, keep_quotes=True)
    expand = sum(map(name.count, "'\"")) == sum(map(quotes.count, "'\""))
    return Marker(name, expand, chomp=dash == "-", fd=int(fd) if fd else None)


def _markers(text: str) -> list[Marker]:
    """The markers of a logical line, if its instruction (or ONBUILD's trigger) takes heredocs.
    `cat<<EOF` is not a marker, as in BuildKit (markers are whole words)."""
    if "<<" not in text:
        return []
    keyword, *rest = WHITESPACE.split(text.strip(SPACES))
    if keyword.upper() == "ONBUILD":
        keyword = next((word for word in rest if not word.startswith("--")), "")
    if keyword.upper() not in _KEYWORDS:
        return []
    markers = (parse_marker(word) for word in _shell_words(text))
    return [marker for marker in markers if marker]


def _shell_words(text: str) -> list[str]:
    """The line's words as BuildKit's shell lexer gives them when it looks for heredocs: quotes
    and escapes kept, `<<` glued to the blanks after it. Where that lexer fails (an unclosed
    quote or `${`) BuildKit finds no heredocs at all, so neither do we."""
    words: list[str] = []
    word = ""
    i = 0
    while i < len(text):
        if text[i] in SPACES:
            if word:
                words.append(word)
            word = ""
            i += 1
            continue
        end = _token_end(text, i)
        if end is None:
            return []
        if text.startswith("<<", i):
            end = _MARKER_BLANKS.match(text, i + 2).end()
        word += text[i:end]
        i = end
    if word:
        words.append(word)
    return words


def _token_end(text: str, i: int) -> int | None:
    """Where the lexer token at `i` ends: a quoted string, `${...}`, an escaped character or one
    character. None when a quote or a brace is not closed."""
    ch = text[i]
    if ch == "\\":
        return min(i + 2, len(text))
    if ch == "'":
        close = text.find("'", i + 1)
        return None if close < 0 else close + 1
    if ch == '"':
        j = i + 1
        while j < len(text) and text[j] != '"':
            end = _token_end(text, j) if text.startswith("${", j) else j + 1 + (text[j] == "\\")
            if end is None:
                return None
            j = end
        return None if j >= len(text) else j + 1
    if text.startswith("${", i):
        j = i + 2
        if j >= len(text) or text[j] in "{}:":
            return None
        while j < len(text) and text[j] != "}":
            end = _token_end(text, j)
            if end is None:
                return None
            j = end
        return None if j >= len(text) else j + 1
    return i + 1


def _unquote(word: str, keep_quotes: bool) -> str:
    """The delimiter with escapes applied and quotes removed (or kept, to count them): shell
    rules, where a backslash inside double quotes only escapes `"`, `$` and itself."""
    out, quote, i = "", "", 0
    while i < len(word):
        ch = word[i]
        if ch == "\\" and quote != "'":
            if i + 1 < len(word):
                if quote == '"' and word[i + 1] not in '"$\\':
                    out += ch
                i += 1
                out += word[i]
        elif ch in "'\"" and quote in ("", ch):
            quote = "" if quote else ch
            out += ch if keep_quotes else ""
        else:
            out += ch
        i += 1
    return out
