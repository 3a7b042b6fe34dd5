"""Dockerfile text -> `Dockerfile` of typed instructions, through the Lark grammar."""
from __future__ import annotations

import difflib
import functools
import re
from pathlib import Path

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from grammar import instructions as ins
from grammar.arguments import BUILDERS, FlagText, Site, parse_flags
from grammar.directives import read_directives
from grammar.errors import DockerfileError, Span
from grammar.heredoc import Lifted, lift_heredocs

_KEYWORDS = sorted(set(ins.KEYWORD_OF.values()))
_ONBUILD_PREFIX = re.compile(r"^\s*ONBUILD\s*", re.IGNORECASE)


@functools.cache
def _parser(escape: str) -> Lark:
    template = Path(__file__).with_name("dockerfile.lark").read_text()
    return Lark(template.replace("%ESC%", re.escape(escape)), parser="lalr", lexer="contextual",
                propagate_positions=True, cache=True)


@functools.cache
def _continuation(escape: str) -> re.Pattern[str]:
    return re.compile(re.escape(escape) + r"[ \t]*\r?\n(?:[ \t]*(?:#[^\n]*)?\r?\n)*")


def split_lines(text: str) -> list[str]:
    """Physical lines as Docker reads them: a leading BOM and each line's `\\r` dropped."""
    text = text.removeprefix("\ufeff")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def parse(text: str, file: str = "Dockerfile") -> ins.Dockerfile:
    """Parse a whole Dockerfile. Raises DockerfileError (and nothing else) for bad input."""
    lines = split_lines(text)
    directives = read_directives(lines, file)
    escape = directives.escape
    lexable, heredocs = lift_heredocs(lines, escape, file)
    source = "\n".join(lexable) + "\n"
    # A continuation on the last line continues into nothing: Docker ends the instruction there.
    source = re.sub(re.escape(escape) + r"[ \t]*\n(?:[ \t]*(?:#[^\n]*)?\n)*\Z", "\n", source)
    try:
        tree = _parser(escape).parse(source)
    except UnexpectedInput as error:
        raise _syntax_error(error, lines, file) from None
    builder = _Builder(file, lines, source, escape, heredocs)
    built = tuple(builder.instruction(node) for node in tree.children if isinstance(node, Tree))
    return ins.Dockerfile(file=file, directives=directives, instructions=built, lines=tuple(lines))


class _Builder:
    """Turns the parse tree into instructions; holds the source so spans and text can be cut."""

    def __init__(self, file: str, lines: list[str], source: str, escape: str,
                 heredocs: dict[int, Lifted]) -> None:
        self.file, self.lines, self.source, self.escape = file, lines, source, escape
        self.heredocs = heredocs
        self.continuation = _continuation(escape)

    def joined(self, start: int, end: int) -> str:
        """Source text with its line continuations (and the comment lines inside them) removed."""
        return self.continuation.sub("", self.source[start:end]).strip()

    def instruction(self, node: Tree) -> ins.Instruction:
        keyword_token: Token = node.children[0]
        keyword = keyword_token.type
        flags = [FlagText(t.children[0].value, t.children[0].column)
                 for t in node.children[1:] if isinstance(t, Tree) and t.data == "flag"]
        last = node.children[-1]
        end_pos = last.meta.end_pos if isinstance(last, Tree) else last.end_pos
        end_line = last.meta.end_line if isinstance(last, Tree) else last.end_line
        line = keyword_token.line
        lifted = self.heredocs.get(line)
        span = Span(self.file, line, lifted.end_line if lifted else end_line)
        args_token = last if isinstance(last, Token) and last.type == "ARGS" else None
        site = Site(keyword=keyword, span=span,
                    original=self.joined(keyword_token.start_pos, end_pos),
                    escape=self.escape, source_line=self.lines[line - 1],
                    args_column=args_token.column if args_token else keyword_token.end_column,
                    heredocs=lifted.heredocs if lifted else ())
        parsed_flags = parse_flags(site, flags)
        if keyword == "ONBUILD":
            return self.onbuild(site, last if isinstance(last, Tree) else None)
        args = self.joined(args_token.start_pos, args_token.end_pos) if args_token else ""
        return BUILDERS[keyword](site, parsed_flags, args)

    def onbuild(self, site: Site, trigger_node: Tree | None) -> ins.Onbuild:
        if trigger_node is None:
            raise site.error("ONBUILD requires at least one argument")
        trigger_keyword = trigger_node.children[0].type
        if trigger_keyword == "ONBUILD":
            raise site.error("chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
        if trigger_keyword in ("FROM", "MAINTAINER"):
            raise site.error(f"{trigger_keyword} isn't allowed as an ONBUILD trigger")
        trigger = self.instruction(trigger_node)
        return ins.Onbuild(site.span, site.original, trigger=trigger,
                           expression=_ONBUILD_PREFIX.sub("", site.original))


def _syntax_error(error: UnexpectedInput, lines: list[str], file: str) -> DockerfileError:
    """Lark's error, said the way a Dockerfile author thinks: usually an unknown instruction."""
    line = getattr(error, "line", None)
    column = getattr(error, "column", None)
    if isinstance(error, UnexpectedEOF) or line is None or line < 1 or line > len(lines):
        return DockerfileError("unexpected end of file", file=file)
    source_line = lines[line - 1]
    before = source_line[: max(column - 1, 0)]
    if isinstance(error, (UnexpectedCharacters, UnexpectedToken)) and not before.strip():
        word = source_line.split()[0] if source_line.split() else source_line
        close = difflib.get_close_matches(word.upper(), _KEYWORDS, n=1)
        return DockerfileError(f"unknown instruction: {word}", file=file, line=line,
                               column=column, source_line=source_line,
                               hint=f"did you mean {close[0]}?" if close else None)
    return DockerfileError("syntax error", file=file, line=line, column=column,
                           source_line=source_line)
