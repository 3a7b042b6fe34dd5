"""Docker's word rules for instruction arguments: splitting, JSON exec form, flags.

These decide how many arguments an instruction has and which text becomes which field, before
any variable is expanded. They follow BuildKit's parser, quirks included, because a Dockerfile
that builds with Docker must mean the same thing here.
"""
from __future__ import annotations

import json
import re

WHITESPACE = re.compile(r"[\t\v\f\r ]+")
# Go's unicode.IsSpace, which BuildKit trims and splits words with. Python's isspace() and a
# bare strip() also count the separators \x1c-\x1f, which Go keeps inside words, so strips in
# the front end name these characters: `text.strip(SPACES)`.
SPACES = "\t\n\v\f\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000" + "".join(
    map(chr, range(0x2000, 0x200B)))


class NotStringArray(ValueError):
    """A JSON array with a non-string element: an error, not a fall-back to shell form."""


def split_whitespace(rest: str) -> list[str]:
    """Whitespace-delimited words, quotes not special (FROM, EXPOSE, COPY sources)."""
    rest = rest.strip(SPACES)
    return WHITESPACE.split(rest) if rest else []


def parse_json_array(rest: str) -> list[str] | None:
    """The strings of a JSON array, or None when `rest` is not one (so shell form applies)."""
    rest = rest.lstrip(SPACES)
    if not rest.startswith("["):
        return None
    try:
        value = json.loads(rest, parse_constant=_not_json)
    except (ValueError, RecursionError):  # RecursionError: nested too deep, as Go's decoder says
        return None
    if not isinstance(value, list):
        return None
    if not all(isinstance(item, str) for item in value):
        raise NotStringArray("when using JSON array syntax, arrays must be comprised of strings only")
    return value


def _not_json(constant: str) -> None:
    """NaN and Infinity are Python's JSON extensions; Go's decoder, and so Docker, refuses them."""
    raise ValueError(f"not JSON: {constant}")


def split_words(rest: str, escape: str) -> list[str]:
    """Quote-aware split that keeps quotes and escapes in the words (ENV, LABEL, ARG): they are
    removed later, when the word is expanded."""
    words: list[str] = []
    word: list[str] = []
    quote = ""
    blank_ok = False
    in_word = False
    i, n = 0, len(rest)
    while i < n:
        ch = rest[i]
        if not in_word:
            if ch in SPACES:
                i += 1
                continue
            in_word = True
        if not quote:
            if ch in SPACES:
                if blank_ok or word:
                    words.append("".join(word))
                word, blank_ok, in_word = [], False, False
                i += 1
                continue
            if ch in "'\"":
                quote, blank_ok = ch, True
            elif ch == escape:
                if i + 1 == n:
                    break
                word.append(ch)
                i += 1
                ch = rest[i]
            word.append(ch)
        else:
            if ch == quote:
                quote = ""
            elif ch == escape and quote != "'":
                if i + 1 == n:
                    break
                word.append(ch)
                i += 1
                ch = rest[i]
            word.append(ch)
        i += 1
    if in_word and (blank_ok or word):
        words.append("".join(word))
    return words


def flag_word(text: str, escape: str) -> str:
    """A `--flag=value` word with its quotes and escapes removed, as BuildKit reads flags: the
    escape character (the directive's, since Dockerfile frontend 1.15) takes the next character,
    even inside single quotes, and one left at the end is dropped."""
    out: list[str] = []
    quote = ""
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == escape:
            if i + 1 == len(text):
                break
            i += 1
            out.append(text[i])
        elif quote:
            if ch == quote:
                quote = ""
            else:
                out.append(ch)
        elif ch in "'\"":
            quote = ch
        else:
            out.append(ch)
        i += 1
    return "".join(out)
