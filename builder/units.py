"""Byte counts for people: the one way sizes are shown (`12.3MB`, `4.26MB`) and read (`512m`,
`500MB`, `10GiB`) on pybuild's command line.

Durations have their one parser in grammar/durations.py (Go's time.ParseDuration, which
HEALTHCHECK needs): the grammar may not import builder, and builder may import the grammar.
"""
from __future__ import annotations

import re

_SHOWN = ("B", "kB", "MB", "GB", "TB", "PB")
_PREFIXES = "kmgtp"
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:([kmgtp])(i)?)?b?", re.IGNORECASE)


def human_size(count: float, significant: int | None = None) -> str:
    """Powers of 1000, as docker shows sizes. By default one decimal (`512B`, `12.3MB`), which
    keeps its width in a progress line and a summary; `significant=3` is Docker's
    units.HumanSize (`4.26MB`, `123MB`), which `pybuild images` and `history` print as
    `docker images` does."""
    unit = 0
    while count >= 1000 and unit < len(_SHOWN) - 1:
        count /= 1000
        unit += 1
    if significant is not None:
        return f"{count:.{significant}g}{_SHOWN[unit]}"
    return f"{count:.0f}B" if unit == 0 else f"{count:.1f}{_SHOWN[unit]}"


def parse_size(text: str, decimal: bool = False) -> int:
    """Bytes from `67108864`, `512m`, `1.5g`, `64MB`, `10GiB` (case does not matter). A unit with
    `i` is a power of 1024; one without is a power of 1024 too, as Docker's RAMInBytes reads
    `--memory`, unless `decimal` makes it one of 1000 (`--keep-storage 500MB`)."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a size: {text!r} (e.g. 500MB, 2GB, 10GiB)")
    number, prefix, binary = match.groups()
    if prefix is None:
        return int(float(number))
    base = 1000 if decimal and binary is None else 1024
    return int(float(number) * base ** (_PREFIXES.index(prefix.lower()) + 1))
