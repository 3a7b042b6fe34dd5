"""Here-documents: lifted out of the text before lexing.

A heredoc body ends at a line equal to a delimiter the instruction itself chose (`<<EOF`), which no
regular lexer can recognise, so this pass finds RUN/COPY/ADD logical lines with `<<WORD` markers,
takes the following lines as their bodies, and blanks those lines so line numbers hold.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from grammar.errors import DockerfileError
from grammar.instructions import Heredoc

_MARKER = re.compile(r"(\d*)<<(-?)([^<]+)")
_KEYWORDS = {"RUN", "COPY", "ADD"}


@dataclass(frozen=True)
class Lifted:
    """The heredocs of one instruction and the last line they occupy (their terminator)."""

    heredocs: tuple[Heredoc, ...]
    end_line: int


def lift_heredocs(lines: list[str], escape: str, file: str) -> tuple[list[str], dict[int, Lifted]]:
    """Returns the lines with heredoc bodies blanked, and the heredocs keyed by the 1-based line
    on which their instruction starts."""
    continuation = re.compile(re.escape(escape) + r"[ \t]*$")
    out = list(lines)
    found: dict[int, Lifted] = {}
    i = 0
    while i < len(lines):
        stripped = lines[i].lstrip()
        if not stripped or stripped.startswith("#"):
            i += 1
            continue
        start = i
        logical = stripped
        while continuation.search(logical) and i + 1 < len(lines):
            i += 1
            following = lines[i]
            if not following.strip() or following.lstrip().startswith("#"):
                continue
            logical = continuation.sub("", logical) + following
        keyword, _, rest = logical.replace("\t", " ").partition(" ")
        markers = _markers(rest) if keyword.upper() in _KEYWORDS and "<<" in rest else []
        heredocs = []
        for name, expand, chomp, fd in markers:
            body: list[str] = []
            while True:
                i += 1
                if i >= len(lines):
                    raise DockerfileError(f"unterminated heredoc {name!r}", file=file,
                                          line=start + 1, source_line=lines[start])
                candidate = lines[i].lstrip("\t") if chomp else lines[i]
                out[i] = ""
                if candidate == name:
                    break
                body.append(lines[i] + "\n")
            heredocs.append(Heredoc(name=name, content="".join(body), expand=expand,
                                    chomp=chomp, fd=fd))
        if heredocs:
            found[start + 1] = Lifted(tuple(heredocs), i + 1)
        i += 1
    return out, found


def _markers(rest: str) -> list[tuple[str, bool, bool, int | None]]:
    """`<<WORD` words of a line: (name, expand, chomp, fd). A quoted delimiter turns off
    expansion of the body; `cat<<EOF` is not a marker, as in BuildKit (markers are whole words)."""
    markers = []
    for word in _raw_words(rest):
        match = _MARKER.fullmatch(word)
        if not match:
            continue
        fd, dash, delimiter = match.groups()
        name = _unquote(delimiter)
        if name:
            markers.append((name, not any(q in delimiter for q in "'\""), dash == "-",
                            int(fd) if fd else None))
    return markers


def _raw_words(text: str) -> list[str]:
    """Split on unquoted blanks, keeping quotes and backslashes in the words."""
    words, word, quote, i = [], "", "", 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == quote:
                quote = ""
            elif ch == "\\" and quote == '"' and i + 1 < len(text):
                word += ch
                i += 1
                ch = text[i]
        elif ch in " \t":
            if word:
                words.append(word)
            word = ""
            i += 1
            continue
        elif ch in "'\"":
            quote = ch
        elif ch == "\\" and i + 1 < len(text):
            word += ch
            i += 1
            ch = text[i]
        word += ch
        i += 1
    if word:
        words.append(word)
    return words


def _unquote(word: str) -> str:
    """The delimiter with quotes and backslash escapes removed."""
    out, quote, i = "", "", 0
    while i < len(word):
        ch = word[i]
        if ch == "\\" and quote != "'" and i + 1 < len(word):
            i += 1
            out += word[i]
        elif quote and ch == quote:
            quote = ""
        elif not quote and ch in "'\"":
            quote = ch
        else:
            out += ch
        i += 1
    return out
