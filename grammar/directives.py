"""Parser directives (`# escape=`, `# syntax=`, `# check=`): read before the grammar is built,
because the escape character changes how the rest of the file is lexed."""
from __future__ import annotations

import re

from grammar.errors import DockerfileError
from grammar.instructions import Directives
from grammar.words import SPACES

_DIRECTIVE = re.compile(r"#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_KNOWN = ("escape", "syntax", "check")


def directive_count(lines: tuple[str, ...] | list[str]) -> int:
    """How many leading lines are directives (comments, yet not a description of what follows)."""
    count = 0
    for raw in lines:
        match = _DIRECTIVE.match(raw.lstrip(SPACES))
        if not match or match.group(1).lower() not in _KNOWN:
            break
        count += 1
    return count


def read_directives(lines: list[str], file: str) -> Directives:
    """Directives are the leading `# key=value` comments; the first other line ends them, and an
    unknown key is an ordinary comment that ends them too (Docker's rules)."""
    seen: dict[str, str] = {}
    for number, raw in enumerate(lines, start=1):
        match = _DIRECTIVE.match(raw.lstrip(SPACES))
        if not match or match.group(1).lower() not in _KNOWN:
            break
        key, value = match.group(1).lower(), match.group(2)
        if key in seen:
            raise DockerfileError(f"only one {key} parser directive can be used", file=file,
                                  line=number, column=raw.index("#") + 1, source_line=raw)
        if key == "escape" and value not in ("\\", "`"):
            raise DockerfileError(f"invalid escape token '{value}' does not match ` or \\",
                                  file=file, line=number, column=raw.index("#") + 1,
                                  source_line=raw)
        seen[key] = value
    return Directives(escape=seen.get("escape", "\\"), syntax=seen.get("syntax"),
                      check=seen.get("check"))
