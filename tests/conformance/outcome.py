"""One builder's result for one case, as data both sides share and the cache stores."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass

OUTPUT_KEPT = 3000


@dataclass(frozen=True)
class Outcome:
    returncode: int
    output: str  # the build's output, its tail
    seconds: float
    image: dict | None = None  # engine.capture() of the built image
    problem: str | None = None  # the build exited 0 but its image could not be had

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Outcome:
        return cls(**data)

    def names_line(self, line: int | None) -> bool | None:
        """Whether the output names Dockerfile line `line` (`Dockerfile:3`, `line 3`, `:3:`)."""
        if line is None:
            return None
        return re.search(rf"Dockerfile:{line}\b|\bline:? ?{line}\b|:{line}:", self.output,
                         re.IGNORECASE) is not None

    def last_error(self) -> str:
        """The line of the output most likely to say what went wrong."""
        lines = [line.strip() for line in self.output.splitlines() if line.strip()]
        for line in reversed(lines):
            if re.search(r"error|fail|unknown|not found|denied", line, re.IGNORECASE):
                return line[:300]
        return (lines[-1] if lines else "")[:300]


def tail(text: str) -> str:
    return text if len(text) <= OUTPUT_KEPT else "..." + text[-OUTPUT_KEPT:]
