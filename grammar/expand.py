"""Variable expansion in Dockerfile words, with BuildKit's shell-word rules.

The reference is BuildKit's `frontend/dockerfile/shell/lex.go`: a Dockerfile that expands one way
under `docker build` must expand the same way here, quirks included (they are noted where they
occur). The escape character is a parameter throughout, because `# escape=` makes it a backtick.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache

from grammar.errors import DockerfileError

__all__ = ["expand_word", "expand_words"]

# Go's unicode.IsSpace, which BuildKit splits words on (Python's isspace() also counts \x1c-\x1f).
_SPACES = "\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_SPACE_RUN = re.compile(f"[{_SPACES}]+")
# BuildKit's `<<` heredoc marker keeps the blanks after it in the same word.
_HEREDOC_BLANKS = re.compile("[\t\r ]*")
# Shell's special parameters, one character each (`$0` is read as a digit run, like `$12`).
_SPECIAL_PARAMS = frozenset("@*#?-$!")
_MODIFIERS = frozenset("-+?#%")
_PATTERN_MODIFIERS = frozenset("#%")
# What the escape character escapes inside double quotes, besides itself; before anything else
# it stays.
_QUOTE_ESCAPABLE = frozenset('"$')
_GLOB_ESCAPABLE = frozenset("*?\\")
_MISSING_BRACE = "syntax error: missing '}'"
_EOF_RUNE = "\ufffd"  # how Go prints the end-of-input rune in a message
_BOM = "\ufeff"  # Go's text/scanner, which BuildKit reads with, skips one at the start

# A piece of expanded text, and whether unquoted whitespace in it separates words.
_Piece = tuple[str, bool]


def expand_word(text: str, env: Mapping[str, str], escape: str = "\\") -> str:
    """One word with quotes removed, escapes applied and variables expanded (BuildKit's
    ProcessWord): what ENV, LABEL, WORKDIR, COPY and friends see. Whitespace stays."""
    return "".join(piece for piece, _ in _Lexer(text, env, escape).pieces())


def expand_words(text: str, env: Mapping[str, str], escape: str = "\\") -> list[str]:
    """Like `expand_word`, then split on unquoted whitespace (BuildKit's ProcessWords), as
    EXPOSE needs. Whitespace from a variable splits too; a word that comes out empty, even a
    quoted `""`, is dropped, as BuildKit drops it."""
    words: list[str] = []
    word = ""
    for piece, splits in _Lexer(text, env, escape).pieces():
        if not splits:
            word += piece
            continue
        first, *rest = _SPACE_RUN.split(piece)
        word += first
        for part in rest:
            if word:
                words.append(word)
            word = part
    if word:
        words.append(word)
    return words


def _name_char(ch: str) -> bool:
    """Go's unicode.IsLetter or IsDigit (categories L and Nd), or `_`."""
    return ch.isalpha() or ch.isdecimal() or ch == "_"


@lru_cache(maxsize=64)
def _specials(chars: str) -> re.Pattern[str]:
    """The next character among `chars`: plain text runs up to it are copied in one slice."""
    return re.compile(f"[{re.escape(chars)}]")


class _Lexer:
    """One pass over a word; `pos` is the index of the next unread character."""

    __slots__ = ("text", "pos", "env", "escape")

    def __init__(self, text: str, env: Mapping[str, str], escape: str) -> None:
        self.text = text[1:] if text.startswith(_BOM) else text
        self.pos = 0
        self.env = env
        self.escape = escape

    def pieces(self) -> list[_Piece]:
        """The whole text, expanded."""
        try:
            return self._read("", raw=False)
        except RecursionError:
            raise DockerfileError("syntax error: substitutions nested too deeply") from None

    def _read(self, stop: str, raw: bool) -> list[_Piece]:
        """Read up to and past `stop` ("" means the end of the text). With `raw`, escape
        characters are kept, because a pattern interprets them a second time."""
        text, esc, end = self.text, self.escape, len(self.text)
        special = _specials("$'\"<" + esc + stop)
        pieces: list[_Piece] = []
        while self.pos < end:
            ch = text[self.pos]
            if ch == stop:
                self.pos += 1
                return pieces
            if ch == "$":
                pieces.append((self._dollar(), True))
            elif ch == "'":
                pieces.append((self._single_quoted(), False))
            elif ch == '"':
                pieces.append((self._double_quoted(raw), False))
            elif text.startswith("<<", self.pos):
                start = self.pos
                self.pos = _HEREDOC_BLANKS.match(text, start + 2).end()
                pieces.append((text[start:self.pos], False))
            elif ch == esc:
                self.pos += 2
                if self.pos > end:  # a trailing escape character is dropped
                    self.pos = end
                    break
                pieces.append((text[self.pos - 2 if raw else self.pos - 1:self.pos], False))
            else:
                found = special.search(text, self.pos + 1)
                nxt = found.start() if found else end
                pieces.append((text[self.pos:nxt], True))
                self.pos = nxt
        if stop:
            raise DockerfileError(f"unexpected end of statement while looking for matching {stop}")
        return pieces

    def _until(self, stop: str, raw: bool, missing: str) -> str:
        """A modifier's argument, up to `stop`. Any failure at the end of the text is reported as
        the missing delimiter, as BuildKit does."""
        try:
            return "".join(piece for piece, _ in self._read(stop, raw))
        except DockerfileError:
            if self.pos >= len(self.text):
                raise DockerfileError(missing) from None
            raise

    def _single_quoted(self) -> str:
        close = self.text.find("'", self.pos + 1)
        if close < 0:
            self.pos = len(self.text)
            raise DockerfileError(
                "unexpected end of statement while looking for matching single-quote")
        value = self.text[self.pos + 1:close]
        self.pos = close + 1
        return value

    def _double_quoted(self, raw: bool) -> str:
        text, esc, end = self.text, self.escape, len(self.text)
        special = _specials('"$' + esc)
        out: list[str] = []
        self.pos += 1
        while True:
            found = special.search(text, self.pos)
            if found is None:
                self.pos = end
                raise DockerfileError(
                    "unexpected end of statement while looking for matching double-quote")
            out.append(text[self.pos:found.start()])
            self.pos = found.start()
            ch = text[self.pos]
            if ch == '"':
                self.pos += 1
                return "".join(out)
            if ch == "$":
                out.append(self._dollar())
                continue
            self.pos += 1
            nxt = text[self.pos:self.pos + 1]
            escapable = nxt in _QUOTE_ESCAPABLE or nxt == esc
            if raw:
                out.append(esc)
            if escapable:
                self.pos += 1
            out.append(nxt if escapable else esc)

    def _name(self) -> str:
        """A variable name: a digit run, one special parameter, or letters, digits and `_`."""
        text, start, end = self.text, self.pos, len(self.text)
        if start == end:
            return ""
        first = text[start]
        if first in _SPECIAL_PARAMS:
            self.pos += 1
            return first
        pos = start
        if first.isdecimal():
            while pos < end and text[pos].isdecimal():
                pos += 1
        else:
            while pos < end and _name_char(text[pos]):
                pos += 1
        self.pos = pos
        return text[start:pos]

    def _next(self) -> str:
        """The next character, consumed; "" at the end."""
        ch = self.text[self.pos:self.pos + 1]
        self.pos += len(ch)
        return ch

    def _dollar(self) -> str:
        self.pos += 1
        if self.text[self.pos:self.pos + 1] != "{":
            name = self._name()
            return self.env.get(name, "") if name else "$"
        self.pos += 1
        ch = self.text[self.pos:self.pos + 1]
        if not ch:
            raise DockerfileError(_MISSING_BRACE)
        if ch in "{}:":
            raise DockerfileError("syntax error: bad substitution")
        name = self._name()
        op = self._next()
        if op == "}":
            return self.env.get(name, "")
        if op == "/":
            return self._substitute(name)
        if not op:
            raise DockerfileError(_MISSING_BRACE)
        colon = op == ":"
        if colon:
            op = self._next()
        modifier = (":" if colon else "") + (op or _EOF_RUNE)
        if (not colon and op not in _MODIFIERS) or (colon and op in _PATTERN_MODIFIERS):
            raise DockerfileError(f"unsupported modifier ({modifier}) in substitution")
        word = self._until("}", op in _PATTERN_MODIFIERS, _MISSING_BRACE)
        value = self.env.get(name)
        empty = value is None or (colon and not value)
        if op == "-":
            return word if empty else value
        if op == "+":
            return "" if empty else word
        if op == "?":
            if value is None:
                raise DockerfileError(f"{name}: {word or 'is not allowed to be unset'}")
            if empty:
                raise DockerfileError(f"{name}: {word or 'is not allowed to be empty'}")
            return value
        if op in _PATTERN_MODIFIERS:
            longest = word.startswith(op)
            return _trim(value or "", word[1:] if longest else word, longest, suffix=op == "%")
        raise DockerfileError(f"unsupported modifier ({modifier}) in substitution")

    def _substitute(self, name: str) -> str:
        """`${NAME/pattern/replacement}`, `${NAME//pattern/replacement}`: first or every match."""
        every = self.text[self.pos:self.pos + 1] == "/"
        if every:
            self.pos += 1
        pattern = self._until("/", True, "syntax error: missing '/' in ${}")
        replacement = self._until("}", True, _MISSING_BRACE)
        value = self.env.get(name, "")
        regex = re.compile(_glob_regex(pattern, longest=True))
        if every:
            return _replace_all(regex, value, replacement)
        found = regex.search(value)
        if found is None:
            return value
        return value[:found.start()] + replacement + value[found.end():]


def _glob_regex(pattern: str, longest: bool) -> str:
    """BuildKit's patterns: `*` any run (shortest unless `longest`), `?` one character,
    backslash escapes `*`, `?` and itself (always backslash, whatever `# escape=` says), `\\}`
    and `\\/` are the plain characters; no `[...]` classes. Any other escape is an error."""
    body = pattern[1:] if pattern.startswith(_BOM) else pattern
    star = ".*" if longest else ".*?"
    out: list[str] = []
    pos = 0
    while pos < len(body):
        ch = body[pos]
        pos += 1
        if ch == "*":
            out.append(star)
        elif ch == "?":
            out.append(".")
        elif ch != "\\":
            out.append(re.escape(ch))
        elif body[pos:pos + 1] not in ("}", "/"):
            nxt = body[pos:pos + 1]
            if nxt not in _GLOB_ESCAPABLE:
                raise DockerfileError(f"invalid pattern ({pattern}) in substitution: "
                                      f"invalid escape '\\{nxt or _EOF_RUNE}'")
            out.append("\\" + nxt)
            pos += 1
    return "".join(out)


def _trim(value: str, pattern: str, longest: bool, suffix: bool) -> str:
    """`#`/`##` remove the shortest/longest matching prefix; `%`/`%%` the suffix, found as BuildKit
    does: as a prefix of the reversed value, with the pattern reversed (escapes kept in order)."""
    if suffix:
        tokens = re.findall(r"\\.|.", pattern, re.DOTALL)
        return _trim(value[::-1], "".join(reversed(tokens)), longest, suffix=False)[::-1]
    found = re.match(_glob_regex(pattern, longest), value)
    return value[found.end():] if found else value


def _replace_all(regex: re.Pattern[str], value: str, replacement: str) -> str:
    """Go's Regexp.ReplaceAllString, which BuildKit uses: an empty match right after a match is
    not replaced, and in the replacement `$0`/`${0}` is the match, `$$` a dollar, and any other
    `$name` or `${name}` is empty (the pattern has no groups)."""
    template = _go_template(replacement)
    out: list[str] = []
    last_end = search = 0
    while search <= len(value):
        found = regex.search(value, search)
        if found is None:
            break
        start, end = found.span()
        out.append(value[last_end:start])
        if end > last_end or start == 0:
            out.extend(found.group() if part is None else part for part in template)
        last_end = end
        search = max(search + 1, end)
    out.append(value[last_end:])
    return "".join(out)


def _go_template(replacement: str) -> list[str | None]:
    """A Go regexp replacement template as literal parts, with None where the match goes."""
    parts: list[str | None] = []
    pos = 0
    while (dollar := replacement.find("$", pos)) >= 0:
        parts.append(replacement[pos:dollar])
        pos = dollar + 1
        if replacement.startswith("$", pos):
            parts.append("$")
            pos += 1
            continue
        brace = replacement.startswith("{", pos)
        start = end = pos + brace
        while end < len(replacement) and _name_char(replacement[end]):
            end += 1
        if end == start or (brace and not replacement.startswith("}", end)):
            parts.append("$")  # malformed: the dollar is literal
            continue
        if replacement[start:end] == "0":
            parts.append(None)
        pos = end + brace
    parts.append(replacement[pos:])
    return parts
