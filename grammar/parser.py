"""Dockerfile text -> `Dockerfile` of typed instructions, through the Lark grammar."""
from __future__ import annotations

import functools
import os
import re

from grammar import instructions as ins
from grammar.arguments import BUILDERS, FlagText, Site, parse_flags
from grammar.directives import read_directives
from grammar.errors import DockerfileError, Span
from grammar.heredoc import Lifted, lift_heredocs
from grammar.lark_import import Lark, Token, Tree, UnexpectedEOF, UnexpectedInput
from grammar.lines import (continuation, continuation_regex, end_dangling_continuation,
                           logical_line, physical_lines)
from grammar.suggest import suggest
from grammar.words import SPACES, WHITESPACE

_KEYWORDS = sorted(set(ins.KEYWORD_OF.values()))
_ONBUILD_PREFIX = re.compile(r"^\s*ONBUILD\s*", re.IGNORECASE)
_GRAMMAR = os.path.join(os.path.dirname(__file__), "dockerfile.lark")


@functools.cache
def _parser(escape: str) -> Lark:
    with open(_GRAMMAR, encoding="utf-8") as handle:
        template = handle.read()
    grammar = (template.replace("%CONT%", continuation_regex(escape))
               .replace("%ESC%", re.escape(escape)))
    return Lark(grammar, parser="lalr", lexer="contextual", propagate_positions=True, cache=True)


def parse(text: str, file: str = "Dockerfile") -> ins.Dockerfile:
    """Parse a whole Dockerfile. Raises DockerfileError (and nothing else) for bad input."""
    raw = physical_lines(text)
    lines = [line.rstrip("\r") for line in raw]
    directives = read_directives(lines, file)
    escape = directives.escape
    lexable, heredocs = lift_heredocs(raw, escape, file)
    source = "\n".join(end_dangling_continuation(lexable, escape)) + "\n"
    try:
        tree = _parser(escape).parse(source)
    except UnexpectedInput as error:
        raise _syntax_error(error, lines, escape, file) from None
    builder = _Builder(file, tuple(lines), source, escape, heredocs)
    built = tuple(builder.instruction(node) for node in tree.children if isinstance(node, Tree))
    if not built:
        raise DockerfileError("file with no instructions", file=file)
    return ins.Dockerfile(file=file, directives=directives, instructions=built, lines=tuple(lines))


class _Builder:
    """Turns the parse tree into instructions; holds the source so spans and text can be cut."""

    def __init__(self, file: str, lines: tuple[str, ...], source: str, escape: str,
                 heredocs: dict[int, Lifted]) -> None:
        self.file, self.lines, self.source, self.escape = file, lines, source, escape
        self.heredocs = heredocs
        self.continuation = continuation(escape)

    def joined(self, start: int, end: int) -> str:
        """Source text with its line continuations (and the comment lines inside them) removed:
        the text BuildKit's parser sees."""
        return self.continuation.sub("", self.source[start:end])

    def instruction(self, node: Tree, lifted: Lifted | None = None) -> ins.Instruction:
        keyword_token: Token = node.children[0]
        keyword = keyword_token.type
        flag_tokens = [child.children[0] for child in node.children[1:]
                       if isinstance(child, Tree) and child.data == "flag"]
        flags = [FlagText(self.joined(t.start_pos, t.end_pos), (t.line, t.column))
                 for t in flag_tokens]
        last = node.children[-1]
        end_pos = last.meta.end_pos if isinstance(last, Tree) else last.end_pos
        end_line = last.meta.end_line if isinstance(last, Tree) else last.end_line
        line = keyword_token.line
        lifted = lifted or self.heredocs.get(line)
        span = Span(self.file, line, lifted.end_line if lifted else end_line)
        args_token = last if isinstance(last, Token) and last.type == "ARGS" else None
        args_at = ((args_token.line, args_token.column) if args_token
                   else (keyword_token.end_line, keyword_token.end_column))
        site = Site(keyword=keyword, span=span,
                    original=self.joined(keyword_token.start_pos, end_pos),
                    escape=self.escape, lines=self.lines, args_at=args_at,
                    heredocs=lifted.heredocs if lifted else ())
        parsed_flags = parse_flags(site, flags)
        if keyword == "ONBUILD":
            return self.onbuild(site, last if isinstance(last, Tree) else None, lifted)
        args = (self.joined(args_token.start_pos, args_token.end_pos).strip(SPACES)
                if args_token else "")
        return BUILDERS[keyword](site, parsed_flags, args)

    def onbuild(self, site: Site, trigger_node: Tree | None, lifted: Lifted | None) -> ins.Onbuild:
        """The trigger is checked now, though Docker runs it only in a child image; it is kept
        verbatim, heredoc bodies and terminators included, as Docker stores it."""
        if trigger_node is None:
            raise site.error("ONBUILD requires at least one argument")
        trigger_keyword = trigger_node.children[0].type
        if trigger_keyword == "ONBUILD":
            raise site.error("chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
        if trigger_keyword in ("FROM", "MAINTAINER"):
            raise site.error(f"{trigger_keyword} isn't allowed as an ONBUILD trigger")
        trigger = self.instruction(trigger_node, lifted)
        expression = _ONBUILD_PREFIX.sub("", site.original)
        for heredoc in site.heredocs:
            expression += "\n" + heredoc.content + heredoc.name
        return ins.Onbuild(site.span, site.original, trigger=trigger, expression=expression)


def _syntax_error(error: UnexpectedInput, lines: list[str], escape: str,
                  file: str) -> DockerfileError:
    """Lark's error, said the way a Dockerfile author thinks. The arguments token takes any
    text, so the grammar can only fail where an instruction keyword is expected: at the start
    of a line, or after ONBUILD. The unknown word is named as Docker names it, after joining
    continuations (`RUN\\` followed by `echo` is `RUNecho`)."""
    token = getattr(error, "token", None)
    if isinstance(error, UnexpectedEOF) or token is not None and token.type == "$END":
        # Only a continuation reaches the end: an escaped blank before a final escape (`\ \`).
        return DockerfileError("the file ends inside a line continuation", file=file,
                               line=len(lines), source_line=lines[-1])
    line, column = error.line, error.column
    source_line = lines[line - 1]
    text, _ = logical_line([source_line[column - 1:], *lines[line:]], 0, escape)
    word = WHITESPACE.split(text.strip(SPACES))[0]
    if word.upper() in _KEYWORDS:
        hint = "pybuild does not join a keyword split by a line continuation"
    else:
        close = suggest(word, _KEYWORDS, case_sensitive=False)
        hint = f"did you mean {close}?" if close else None
    return DockerfileError(f"unknown instruction: {word}", file=file, line=line, column=column,
                           source_line=source_line, hint=hint)
