"""Cache keys: a pure function of the parent key and a step's inputs, used alike for lookup and
for store (Kaniko's read and write keys drifted apart; here there is one function). The inputs are
kept beside each result, so a miss can name the first input that differs from the closest earlier
build of the same step."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

# Bumped whenever what a key covers, or the layer format, changes: old entries then never match.
FORMAT = "pybuild-cache-1"


@dataclass(frozen=True)
class Inputs:
    """Named inputs of one step, in a fixed order (the first difference is the reported one)."""

    items: tuple[tuple[str, str], ...]

    def get(self, name: str) -> str | None:
        return next((value for key, value in self.items if key == name), None)


def step_key(parent: str, inputs: Inputs) -> str:
    data = json.dumps([FORMAT, parent, list(inputs.items)], separators=(",", ":"))
    return hashlib.sha256(data.encode()).hexdigest()


def miss_reason(now: Inputs, before: Inputs | None, same_parent: bool,
                describe_sources=None) -> str:
    """Why a step could not be reused, in a person's words: the first input that differs from
    the closest earlier build of the same step, or that an earlier step changed."""
    if before is None:
        return "no earlier build"
    old = dict(before.items)
    for name, value in now.items:
        if name not in old:
            return f"new input {name}"
        if old[name] != value:
            if name == "sources" and describe_sources is not None:
                return describe_sources(old[name], value)
            if name.startswith("ARG "):
                return f"{name} {_short(old[name])} -> {_short(value)}"
            if name.startswith("step "):
                return f"{_short(old[name])} -> {_short(value)}"
            if name.startswith(("base ", "from image ")):
                return f"{name} now {value}"
            if name == "instruction":
                return "instruction changed"
            return f"{name} changed"
    for name in old:
        if now.get(name) is None:
            return f"{name} no longer applies"
    return "an earlier step changed" if not same_parent else "cache entry missing"


def _short(value: str) -> str:
    return value if len(value) <= 40 else value[:37] + "..."
