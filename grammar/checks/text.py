"""The checks of the Dockerfile's text as written (keyword casing, continuations, the comments
above FROM and ARG), and the description comments `--call=outline`/`targets` show."""
from __future__ import annotations

import re

from grammar import instructions as ins
from grammar.checks.common import Finding, Stage, keyword_as_written
from grammar.directives import directive_count
from grammar.words import SPACES


def comments_above(dockerfile: ins.Dockerfile, instruction: ins.Instruction) -> list[str]:
    """The comment lines right above an instruction, as BuildKit's parser collects them: blank
    lines do not separate them, an empty `#` does, directives are not among them."""
    lines = dockerfile.lines
    first = directive_count(lines)
    comments: list[str] = []
    for index in range(instruction.span.line - 2, first - 1, -1):
        text = lines[index].strip(SPACES)
        if not text:
            continue
        if not text.startswith("#"):
            break
        comment = text[1:].strip(SPACES)
        if not comment:
            break
        comments.insert(0, comment)
    return comments


def doc_comment(dockerfile: ins.Dockerfile, instruction: ins.Instruction, name: str) -> str:
    """The description of stage or ARG `name`: the comment above that starts with the name."""
    for comment in comments_above(dockerfile, instruction):
        if name and comment.startswith(name + " "):
            return comment[len(name) + 1:]
    return ""


def text_checks(dockerfile: ins.Dockerfile, stages: tuple[Stage, ...]) -> list[Finding]:
    findings = _casing(stages)
    for instruction in dockerfile.instructions:
        findings += _empty_continuation(dockerfile, instruction)
        findings += _description(dockerfile, instruction)
    return findings


def _casing(stages: tuple[Stage, ...]) -> list[Finding]:
    """ConsistentInstructionCasing: keywords (from the first FROM on) in the casing of the
    majority of the consistently cased ones; a tie is upper case."""
    keywords = [(keyword_as_written(i), i.span.line)
                for stage in stages for i in (stage.start, *stage.steps)]
    lower = sum(k == k.lower() for k, _ in keywords)
    upper = sum(k == k.upper() and k != k.lower() for k, _ in keywords)
    casing = "lowercase" if lower > upper else "uppercase"
    return [Finding(line, "ConsistentInstructionCasing",
                    f"Command '{keyword}' should match the case of the command majority "
                    f"({casing})")
            for keyword, line in keywords
            if keyword != (keyword.lower() if lower > upper else keyword.upper())]


def _empty_continuation(dockerfile: ins.Dockerfile,
                        instruction: ins.Instruction) -> list[Finding]:
    """NoEmptyContinuation: an empty line inside the continued lines of an instruction,
    reported at its last line."""
    continued = re.compile(re.escape(dockerfile.directives.escape) + "[ \t]*$")
    lines = dockerfile.lines
    index, empty = instruction.span.line - 1, False
    while index < len(lines) and continued.search(lines[index]):
        index += 1
        while index < len(lines) and (not lines[index].strip(SPACES)
                                      or lines[index].lstrip(SPACES).startswith("#")):
            empty = empty or not lines[index].strip(SPACES)
            index += 1
    if not empty:
        return []
    return [Finding(min(index + 1, len(lines)), "NoEmptyContinuation", "Empty continuation line")]


def _description(dockerfile: ins.Dockerfile, instruction: ins.Instruction) -> list[Finding]:
    """InvalidDefinitionDescription (experimental in BuildKit): the comment right above a named
    FROM or an ARG does not start with the name it would describe."""
    match instruction:
        case ins.From(name=str(name)):
            keyword, names = "FROM", [name]
        case ins.Arg():
            keyword, names = "ARG", [decl.name for decl in instruction.args]
        case _:
            return []
    comments = comments_above(dockerfile, instruction)
    if not comments or comments[-1].split(" ")[0] in names:
        return []
    example = names[0] if len(names) == 1 else "<arg_key>"
    return [Finding(instruction.span.line, "InvalidDefinitionDescription",
                    f"Comment for {keyword} should follow the format: `# {example} "
                    "<description>`")]
