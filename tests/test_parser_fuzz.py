"""Properties of the parser on arbitrary input: it fails only with DockerfileError, what it
accepts points only at lines that exist, and shell-form text comes through untouched.

Random text alone rarely gets past the first line, so a second strategy builds Dockerfile-ish
lines from the pieces that make the grammar hard: keywords in any case, flags, quotes, both
escape characters, heredoc markers, continuations, comments and stray line endings.
"""
from __future__ import annotations

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from grammar import instructions as ins
from grammar.errors import DockerfileError
from grammar.parser import parse
from grammar.words import SPACES

_KEYWORDS = ["FROM", "RUN", "CMD", "LABEL", "MAINTAINER", "EXPOSE", "ENV", "ADD", "COPY",
             "ENTRYPOINT", "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL",
             "HEALTHCHECK", "SHELL", "from", "Run", "onbuild run", "CPY"]
_PIECES = ["--mount=type=cache,target=/x", "--from=a", "--link", "--link=false", "--chown=1:1",
           "--interval=5s", "--retries=3", "--platform=linux/amd64", "--", "--\"a b\"", "-",
           "scratch", "AS", "stage", "NONE", "CMD", "x", "a=b", "k=\"v w\"", "'q'", '"', "'",
           "\\", "\\\\", "`", "``", "$X", "${X:-y}", "[", "]", '["a", "b"]', '["a", 1]', ",",
           "<<EOF", "<<-EOF", "<<'EOF'", '<<"E F"', "3<<EOF", "<< EOF", "cat<<EOF", "EOF",
           "\tEOF", "#", "# c", " ", "  ", "\t", "\f", "\r", "\ufeff", "é"]
_LINE_ENDS = ["\n", "\r\n", "\\\n", "\\ \n", "`\n", "\n\n", "\n# comment\n", ""]
# Mostly none, so that most examples get past the directives.
_DIRECTIVES = ["", "", "", "", "# escape=`\n", "# escape=\\\n", "# syntax=docker/dockerfile:1\n",
               "# check=skip=all\n", "# escape=x\n", "\ufeff# escape=`\n"]

_line = st.builds(lambda keyword, pieces, end: " ".join([keyword, *pieces]) + end,
                  st.sampled_from(_KEYWORDS), st.lists(st.sampled_from(_PIECES), max_size=8),
                  st.sampled_from(_LINE_ENDS))
_dockerfiles = st.builds(lambda directive, lines: directive + "".join(lines),
                         st.sampled_from(_DIRECTIVES), st.lists(_line, min_size=1, max_size=8))


def _check(text: str) -> None:
    """Parsing either fails with DockerfileError or gives instructions within the file."""
    try:
        dockerfile = parse(text)
    except DockerfileError as error:
        str(error)  # rendering must not fail either
        return
    count = len(dockerfile.lines)
    for instruction in dockerfile.instructions:
        spans = [instruction.span]
        if isinstance(instruction, ins.Onbuild):
            spans.append(instruction.trigger.span)
        for span in spans:
            assert 1 <= span.line <= span.end_line <= count, (span, count)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_random_text(text: str) -> None:
    _check(text)


@settings(max_examples=300, deadline=None)
@given(_dockerfiles)
def test_dockerfile_like_text(text: str) -> None:
    _check(text)


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(exclude_characters="\n\\", exclude_categories=("Cs",)), min_size=1))
def test_shell_form_text_is_kept(text: str) -> None:
    """Any one-line RUN text that is not JSON, flags or a heredoc is the command, trimmed of
    Go's whitespace (and only that: Python's strip() would also take \\x1c-\\x1f)."""
    command = text.strip(SPACES)
    assume(command and not command.startswith(("[", "--")) and "<<" not in command)
    run = parse(f"FROM scratch\nRUN {text}\n").instructions[1]
    assert isinstance(run, ins.Run)
    assert run.command == ins.Command((command,), shell=True)


def test_brackets_nested_too_deep_for_json_are_shell_form() -> None:
    """Python's json gives up (RecursionError) long before Go's (10,000 levels): such text is not
    JSON to pybuild, and the command is kept as shell text."""
    for text in ("[" * 50_000, '["a", ' + "[" * 50_000 + "]"):
        run = parse(f"FROM scratch\nRUN {text}\n").instructions[1]
        assert run.command == ins.Command((text,), shell=True)
