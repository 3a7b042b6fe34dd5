"""The parsed Dockerfile as plain JSON data (`pybuild parse`): a stable schema for tools."""
from __future__ import annotations

import dataclasses
from typing import Any

from grammar import instructions as ins


def to_data(dockerfile: ins.Dockerfile) -> dict[str, Any]:
    """{"file", "directives", "instructions": [...]} — see the README for the schema."""
    return {
        "file": dockerfile.file,
        "directives": dataclasses.asdict(dockerfile.directives),
        "instructions": [instruction_data(i) for i in dockerfile.instructions],
    }


def instruction_data(instruction: ins.Instruction) -> dict[str, Any]:
    data: dict[str, Any] = {
        "instruction": instruction.keyword,
        "line": instruction.span.line,
        "end_line": instruction.span.end_line,
        "original": instruction.original,
    }
    for field in dataclasses.fields(instruction):
        if field.name in ("span", "original"):
            continue
        data[field.name.rstrip("_")] = _value(getattr(instruction, field.name))
    return data


def _value(value: Any) -> Any:
    if isinstance(value, ins.Instruction):
        return instruction_data(value)
    if isinstance(value, ins.Command):
        return {"form": "shell" if value.shell else "exec", "args": list(value.args)}
    if dataclasses.is_dataclass(value):
        return {f.name: _value(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_value(item) for item in value]
    return value
