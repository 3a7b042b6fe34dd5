"""`.dockerignore` patterns with Docker's semantics.

Docker reads the file with moby/patternmatcher's `ignorefile.ReadAll`, compiles each pattern
to a Go regexp in `patternmatcher.New`, and BuildKit's context sender (tonistiigi/fsutil) walks
the context asking `MatchesUsingParentResults` about every entry. This module reproduces those
three steps; its quirks are Docker's, listed in testdata/dockerignore/cases.txt.
"""
from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass

# Go's strings.TrimSpace trims unicode.IsSpace; Python's str.strip() would also trim \x1c-\x1f.
_GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007" \
            "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"

# fsutil gives up skipping excluded directories when an exception holds one of these.
_GLOB_CHARS = frozenset("*[]?^\\")


@dataclass(frozen=True, slots=True)
class Pattern:
    """One cleaned pattern; `regex` is matched against whole slash-separated relative paths."""

    text: str
    exception: bool
    regex: re.Pattern[str]


def parse_dockerignore(text: str) -> tuple[Pattern, ...]:
    """The patterns of a `.dockerignore`, in order. Raises ValueError where Docker fails."""
    return tuple(_compile(line) for line in _read_lines(text))


class IgnoreMatcher:
    """Decides what of a context is sent, as BuildKit's fsutil filter does.

    A path's verdict is its last matching pattern's (matching the path or a parent directory),
    evaluated the way `MatchesUsingParentResults` does during a walk: per pattern, whether it
    matched the parent directory is carried down. The state is only the pattern tuple and what
    is derived from it once.
    """

    def __init__(self, patterns: Iterable[Pattern] = ()) -> None:
        self.patterns = tuple(patterns)
        exceptions = [_without_trailing_glob(p.text) for p in self.patterns if p.exception]
        self._has_exceptions = bool(exceptions)
        # Exception prefixes ("dir/") when every exception is literal, else None: fsutil skips
        # an excluded directory only when no literal exception lies inside it.
        self._exception_dirs = None if any(_GLOB_CHARS.intersection(e) for e in exceptions) \
            else tuple(e + "/" for e in exceptions)

    def match(self, rel: str, parent: tuple[bool, ...] | None) -> tuple[bool, tuple[bool, ...]]:
        """(excluded, state) for `rel`, given the state returned for its parent directory
        (None for an entry at the top of the context). A walk threads the state down."""
        matched = False
        state = []
        for i, pattern in enumerate(self.patterns):
            hit = parent is not None and parent[i]
            # Docker skips a pattern that could not change the verdict; it then does not
            # count as matching this directory for the entries below it either.
            if not hit and pattern.exception == matched:
                hit = pattern.regex.fullmatch(rel) is not None
            state.append(hit)
            if hit:
                matched = not pattern.exception
        return matched, tuple(state)

    def excluded(self, rel_path: str) -> bool:
        """Whether a path (posix, relative to the context root) is left out of the context."""
        rel_path = _relative(rel_path)
        if not rel_path:
            return False
        matched, state, parts = False, None, rel_path.split("/")
        for depth in range(1, len(parts) + 1):
            matched, state = self.match("/".join(parts[:depth]), state)
        return matched

    def may_skip_dir(self, rel_dir: str) -> bool:
        """Whether a walk may skip this directory's subtree: it is excluded and no exception
        could re-include anything inside it."""
        return self.excluded(rel_dir) and self.nothing_reincluded_in(_relative(rel_dir))

    def nothing_reincluded_in(self, rel_dir: str) -> bool:
        """Whether no exception can re-include an entry below an excluded `rel_dir` (fsutil's
        rule: only literal exceptions, optionally ending in `/*` or `/**`, are examined)."""
        if not self._has_exceptions:
            return True
        if self._exception_dirs is None:
            return False
        inside = rel_dir + "/"
        return not any(e.startswith(inside) for e in self._exception_dirs)


def _read_lines(text: str) -> list[str]:
    """ignorefile.ReadAll: BOM, `#` comments (in column 1 only), trimming, Clean, leading `/`."""
    lines = []
    for line in text.removeprefix("\ufeff").split("\n"):
        line = line.removesuffix("\r")
        if line.startswith("#"):
            continue
        line = line.strip(_GO_SPACE)
        if not line:
            continue
        exception = line[0] == "!"
        if exception:
            line = line[1:].strip(_GO_SPACE)
        if line:
            line = _clean(line)
            if len(line) > 1 and line[0] == "/":
                line = line[1:]
        lines.append("!" + line if exception else line)
    return lines


def _relative(path: str) -> str:
    """A path below the context root in walk form (`a/b`; the root itself is "")."""
    return _clean("/" + path)[1:]


def _clean(path: str) -> str:
    """Go's filepath.Clean (posixpath.normpath keeps a leading `//`, Go does not)."""
    cleaned = posixpath.normpath(path)
    return cleaned[1:] if cleaned.startswith("//") else cleaned


def _compile(line: str) -> Pattern:
    """patternmatcher.New for one line: Clean again, split off `!`, check the glob syntax."""
    text = _clean(line)
    exception = text[0] == "!"
    if exception:
        if len(text) == 1:
            raise ValueError('illegal exclusion pattern: "!"')
        text = text[1:]
    _check_glob_syntax(text)
    try:
        regex = re.compile(_python_regex(text), re.ASCII)
    except re.error as err:
        raise ValueError(f"bad pattern {text!r}: {err}") from None
    return Pattern(text, exception, regex)


def _check_glob_syntax(text: str) -> None:
    """Docker rejects what Go's filepath.Match rejects: a trailing `\\`, malformed `[...]`."""
    bad = ValueError(f"syntax error in pattern {text!r}")

    def class_char(i: int) -> int:
        if i >= len(text) or text[i] in "-]":
            raise bad
        i += 2 if text[i] == "\\" else 1
        if i >= len(text):
            raise bad
        return i

    i = 0
    while i < len(text):
        if text[i] == "\\":
            if i + 1 == len(text):
                raise bad
            i += 2
        elif text[i] == "[":
            i += 2 if text[i + 1:i + 2] == "^" else 1
            ranges = 0
            while not (ranges and text[i] == "]"):
                i = class_char(i)
                if text[i] == "-":
                    i = class_char(i + 1)
                ranges += 1
            i += 1
        else:
            i += 1


def _python_regex(text: str) -> str:
    """The Python regex (for fullmatch) equivalent to the Go matcher patternmatcher builds.

    patternmatcher uses plain string comparisons for literal patterns, literal ones ending in
    `**` (a prefix) and literal ones starting with `**` (a suffix); those become regexes here.
    """
    kind, go_regex = _docker_regex(text)
    if kind == "exact":
        return re.escape(text)
    if kind == "prefix":
        return re.escape(text[:-2]) + "(?s:.*)"
    if kind == "suffix":
        suffix = text[2:]
        if suffix.startswith("/"):  # `**/foo` also matches `foo` at the top
            return "(?s:.*/)?" + re.escape(suffix[1:])
        return "(?s:.*)" + re.escape(suffix)
    return _go_regex_to_python(go_regex)


def _docker_regex(text: str) -> tuple[str, str]:
    """patternmatcher's compile: the match kind and the Go regexp body (without ^ and $).

    `**` (eating a following `/`) is `(.*/)?`, or `.*` at the end; `*` and `?` stop at `/`;
    `\\x` stays an escape; `[` and `]` pass through, so a class is read with Go regexp
    syntax (where `[^a]` negates and `[!a]` does not); `.+()|{}$` are escaped; `^` is not.
    """
    kind, out, i = "exact", [], 0
    while i < len(text):
        ch, first = text[i], i == 0
        i += 1
        if ch == "*" and text[i:i + 1] == "*":
            i += 1
            if text[i:i + 1] == "/":
                i += 1
            if i == len(text):
                if kind == "exact":
                    kind = "prefix"
                else:
                    out.append(".*")
                    kind = "regexp"
            else:
                out.append("(.*/)?")
                kind = "regexp"
            if first:
                kind = "suffix"
        elif ch == "*":
            out.append("[^/]*")
            kind = "regexp"
        elif ch == "?":
            out.append("[^/]")
            kind = "regexp"
        elif ch in ".+()|{}$":
            out.append("\\" + ch)
        elif ch == "\\":
            out.append("\\" + text[i])  # a trailing `\` was rejected by the glob check
            i += 1
            kind = "regexp"
        else:
            out.append(ch)
            if ch in "[]":
                kind = "regexp"
    return kind, "".join(out)


# Go regexp (RE2, Perl flags) to Python `re`: they agree on everything the translation above
# emits except escapes and the insides of character classes, rewritten here as code-point
# ranges. Go constructs Python lacks (\p{...}, \C) are refused rather than guessed.
_PERL_CLASSES = {
    "d": ((0x30, 0x39),),
    "s": ((0x09, 0x0A), (0x0C, 0x0D), (0x20, 0x20)),
    "w": ((0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)),
}
_POSIX_CLASSES = {
    "alnum": ((0x30, 0x39), (0x41, 0x5A), (0x61, 0x7A)),
    "alpha": ((0x41, 0x5A), (0x61, 0x7A)),
    "ascii": ((0x00, 0x7F),),
    "blank": ((0x09, 0x09), (0x20, 0x20)),
    "cntrl": ((0x00, 0x1F), (0x7F, 0x7F)),
    "digit": ((0x30, 0x39),),
    "graph": ((0x21, 0x7E),),
    "lower": ((0x61, 0x7A),),
    "print": ((0x20, 0x7E),),
    "punct": ((0x21, 0x2F), (0x3A, 0x40), (0x5B, 0x60), (0x7B, 0x7E)),
    "space": ((0x09, 0x0D), (0x20, 0x20)),
    "upper": ((0x41, 0x5A),),
    "word": _PERL_CLASSES["w"],
    "xdigit": ((0x30, 0x39), (0x41, 0x46), (0x61, 0x66)),
}
_C_ESCAPES = {"a": "\a", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def _go_regex_to_python(go: str) -> str:
    out, i = [], 0
    while i < len(go):
        if go[i] == "[":
            piece, i = _go_class(go, i + 1)
        elif go[i] == "\\":
            piece, i = _go_escape_outside_class(go, i + 1)
        else:
            piece, i = go[i], i + 1
        out.append(piece)
    return "".join(out)


def _go_escape_outside_class(go: str, i: int) -> tuple[str, int]:
    """The escape whose letter is at go[i]."""
    letter = go[i:i + 1]
    if letter in ("A", "b", "B"):
        return "\\" + letter, i + 1
    if letter == "z":
        return "\\Z", i + 1
    if letter == "Q":
        end = go.find("\\E", i + 1)
        end = len(go) if end < 0 else end
        return re.escape(go[i + 1:end]), min(end + 2, len(go))
    ranges = _perl_class(letter)
    if ranges is not None:
        return "[" + _class_body(ranges) + "]", i + 1
    char, i = _go_char_escape(go, i)
    return re.escape(char), i


def _go_class(go: str, i: int) -> tuple[str, int]:
    """The class whose body starts at go[i] (after `[`), as a Python class."""
    negate = go[i:i + 1] == "^"
    i += negate
    ranges: list[tuple[int, int]] = []
    first = True
    while first or go[i:i + 1] != "]":
        if i >= len(go):
            raise ValueError("missing closing ]")
        first = False
        named = _posix_class(go, i)
        if named is not None:
            ranges.extend(named[0])
            i = named[1]
            continue
        perl = _perl_class(go[i + 1:i + 2]) if go[i] == "\\" else None
        if perl is not None:
            ranges.extend(perl)
            i += 2
            continue
        lo, i = _go_class_char(go, i)
        hi = lo
        if go[i:i + 1] == "-" and go[i + 1:i + 2] not in ("", "]"):
            hi, i = _go_class_char(go, i + 1)
            if hi < lo:
                raise ValueError(f"invalid character class range {chr(lo)}-{chr(hi)}")
        ranges.append((lo, hi))
    return "[" + "^" * negate + _class_body(ranges) + "]", i + 1


def _posix_class(go: str, i: int) -> tuple[list[tuple[int, int]], int] | None:
    """`[:alpha:]` or `[:^alpha:]` at go[i], inside a class, and the index after it."""
    if not go.startswith("[:", i):
        return None
    end = go.find(":]", i + 2)
    if end < 0:
        return None
    name = go[i + 2:end]
    ranges = _POSIX_CLASSES.get(name.removeprefix("^"))
    if ranges is None:
        raise ValueError(f"invalid character class range [:{name}:]")
    return (_complement(ranges) if name.startswith("^") else list(ranges)), end + 2


def _perl_class(letter: str) -> list[tuple[int, int]] | None:
    """The ranges of `\\d \\s \\w \\D \\S \\W` (ASCII in Go), by letter; None for other letters."""
    if letter in ("p", "P"):
        raise ValueError("Go unicode classes (\\p, \\P) are not supported")
    ranges = _PERL_CLASSES.get(letter.lower()) if letter.isascii() else None
    if ranges is None:
        return None
    return list(ranges) if letter.islower() else _complement(ranges)


def _go_class_char(go: str, i: int) -> tuple[int, int]:
    if i >= len(go):
        raise ValueError("missing closing ]")
    if go[i] == "\\":
        char, i = _go_char_escape(go, i + 1)
        return ord(char), i
    return ord(go[i]), i + 1


def _go_char_escape(go: str, i: int) -> tuple[str, int]:
    """A one-character escape (`\\.`, `\\t`, `\\x41`, `\\101`) whose letter is at go[i]."""
    letter = go[i:i + 1]
    if letter and letter.isascii() and not letter.isalnum():
        return letter, i + 1
    if letter in _C_ESCAPES:
        return _C_ESCAPES[letter], i + 1
    octal = re.match("0[0-7]{0,2}|[1-7][0-7]{1,2}", go[i:i + 3])  # a lone \1 is a backreference
    if octal:
        return chr(int(octal[0], 8)), i + len(octal[0])
    if letter == "x":
        # Docker escapes `{`, so Go's `\x{...}` form never gets here.
        hex_digits = go[i + 1:i + 3]
        if re.fullmatch("[0-9A-Fa-f]{2}", hex_digits):
            return chr(int(hex_digits, 16)), i + 3
    raise ValueError(f"invalid escape sequence \\{letter}")


def _complement(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    out, start = [], 0
    for lo, hi in sorted(ranges):
        if lo > start:
            out.append((start, lo - 1))
        start = max(start, hi + 1)
    if start <= 0x10FFFF:
        out.append((start, 0x10FFFF))
    return out


def _class_body(ranges: Iterable[tuple[int, int]]) -> str:
    return "".join(re.escape(chr(lo)) if lo == hi else f"{re.escape(chr(lo))}-{re.escape(chr(hi))}"
                   for lo, hi in ranges)


def _without_trailing_glob(text: str) -> str:
    return text.removesuffix("/**").removesuffix("/*")
