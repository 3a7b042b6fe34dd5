"""Docker's word rules for instruction arguments: splitting, JSON exec form, flags.

These decide how many arguments an instruction has and which text becomes which field, before
any variable is expanded. They follow BuildKit's parser, quirks included, because a Dockerfile
that builds with Docker must mean the same thing here.
"""
from __future__ import annotations

import json
import re

WHITESPACE = re.compile(r"[\t\v\f\r ]+")


class NotStringArray(ValueError):
    """A JSON array with a non-string element: an error, not a fall-back to shell form."""


def split_whitespace(rest: str) -> list[str]:
    """Whitespace-delimited words, quotes not special (FROM, EXPOSE, COPY sources)."""
    return [word for word in WHITESPACE.split(rest.strip()) if word] if rest.strip() else []


def parse_json_array(rest: str) -> list[str] | None:
    """The strings of a JSON array, or None when `rest` is not one (so shell form applies)."""
    rest = rest.lstrip()
    if not rest.startswith("["):
        return None
    try:
        value = json.loads(rest)
    except ValueError:
        return None
    if not isinstance(value, list):
        return None
    if not all(isinstance(item, str) for item in value):
        raise NotStringArray("when using JSON array syntax, arrays must be comprised of strings only")
    return value


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
            if ch.isspace():
                i += 1
                continue
            in_word = True
        if not quote:
            if ch.isspace():
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


def flag_word(text: str) -> str:
    """A `--flag=value` word with its quotes and backslash escapes removed, as BuildKit reads
    flags (always with `\\`, whatever the escape directive says)."""
    out: list[str] = []
    quote = ""
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
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
