"""Go's time.ParseDuration, which HEALTHCHECK options follow (`30s`, `1m30s`, `1.5h`, `500ms`);
the one duration parser of pybuild (`pybuild prune --filter until=` adds days)."""
from __future__ import annotations

import re

_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
          "m": 60_000_000_000, "h": 3_600_000_000_000}
# One number and its unit; Go reads ASCII digits only, and needs a digit on one side of the dot.
_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h|d)")
_DAY = 24 * _UNITS["h"]
_MAX = 2**63 - 1


def parse_duration(text: str, days: bool = False) -> int:
    """Nanoseconds. Raises ValueError for anything Go would refuse, overflow included, and for
    the unit `d` (24h) unless `days` allows it."""
    sign = -1 if text.startswith("-") else 1
    body = text[1:] if text.startswith(("+", "-")) else text
    if body == "0":
        return 0
    if not body:
        raise ValueError(f"invalid duration {text!r}")
    pos, total = 0, 0
    while pos < len(body):
        match = _PART.match(body, pos)
        if not match:
            raise ValueError(f"invalid duration {text!r}")
        number, unit = match.groups()
        if unit == "d" and not days:
            raise ValueError(f"invalid duration {text!r}")
        whole, _, fraction = number.partition(".")
        scale = _DAY if unit == "d" else _UNITS[unit]
        total += int(whole or 0) * scale
        if fraction:
            total += int(fraction) * scale // 10 ** len(fraction)
        pos = match.end()
    if total > _MAX + (sign < 0):
        raise ValueError(f"invalid duration {text!r}")
    return sign * total
