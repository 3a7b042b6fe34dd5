"""Go's time.ParseDuration, which HEALTHCHECK options follow (`30s`, `1m30s`, `1.5h`, `500ms`)."""
from __future__ import annotations

import re

_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
          "m": 60_000_000_000, "h": 3_600_000_000_000}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(text: str) -> int:
    """Nanoseconds. Raises ValueError for anything Go would refuse."""
    sign, body = (-1, text[1:]) if text.startswith("-") else (1, text.lstrip("+"))
    if body == "0":
        return 0
    pos, total = 0, 0
    while pos < len(body):
        match = _PART.match(body, pos)
        if not match:
            raise ValueError(f"invalid duration {text!r}")
        number, unit = match.groups()
        whole, _, fraction = number.partition(".")
        scale = _UNITS[unit]
        total += int(whole or 0) * scale
        if fraction:
            total += int(fraction) * scale // 10 ** len(fraction)
        pos = match.end()
    if not body:
        raise ValueError(f"invalid duration {text!r}")
    return sign * total
