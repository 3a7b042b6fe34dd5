"""grammar.lint: Dockerfile text -> the warnings BuildKit's build checks give for it."""
from __future__ import annotations

import pytest

from grammar.lint import lint
from grammar.parser import parse

CMD_SIGNALS = ("JSON arguments recommended for CMD to prevent unintended behavior related to OS "
               "signals")
ENTRYPOINT_SIGNALS = CMD_SIGNALS.replace("CMD", "ENTRYPOINT")
MAINTAINER = "Maintainer instruction is deprecated in favor of using label"


@pytest.mark.parametrize(("text", "expected"), [
    ("FROM scratch\nCMD [\"run\"]\n", []),
    ("FROM scratch\nMAINTAINER me <me@example.com>\n", [
        "Dockerfile:2: MaintainerDeprecated: " + MAINTAINER]),
    ("FROM scratch\nCMD run --fast\n", ["Dockerfile:2: JSONArgsRecommended: " + CMD_SIGNALS]),
    ("FROM scratch\nENTRYPOINT run\n", [
        "Dockerfile:2: JSONArgsRecommended: " + ENTRYPOINT_SIGNALS]),
    # An explicit SHELL says the shell form is meant, in this stage and those FROM it.
    ("FROM scratch AS base\nSHELL [\"/bin/bash\", \"-c\"]\nCMD run\nFROM base\nCMD run\n"
     "FROM scratch\nCMD run\n", ["Dockerfile:7: JSONArgsRecommended: " + CMD_SIGNALS]),
    ("FROM scratch as base\n", [
        "Dockerfile:1: FromAsCasing: 'as' and 'FROM' keywords' casing do not match"]),
    ("from scratch AS base\n", [
        "Dockerfile:1: FromAsCasing: 'AS' and 'from' keywords' casing do not match"]),
    # A mixed-case keyword is left to ConsistentInstructionCasing (a tie of cases is upper).
    ("from scratch as base\nFROM scratch AS other\nFrom scratch as mixed\n", [
        "Dockerfile:1: ConsistentInstructionCasing: Command 'from' should match the case of the "
        "command majority (uppercase)",
        "Dockerfile:3: ConsistentInstructionCasing: Command 'From' should match the case of the "
        "command majority (uppercase)"]),
    ("FROM scratch AS Builder\n", [
        "Dockerfile:1: StageNameCasing: Stage name 'Builder' should be lowercase"]),
    ("ARG VERSION=1\nFROM alpine:$VERSION\nFROM --platform=$BUILDPLATFORM alpine:${VERSION}\n",
     []),
    ("ARG VERSION=1\nFROM alpine:${VERSON}\nARG LATER\nFROM alpine:$LATER\n", [
        "Dockerfile:2: UndefinedArgInFrom: FROM argument 'VERSON' is not declared "
        "(did you mean VERSION?)",
        "Dockerfile:4: UndefinedArgInFrom: FROM argument 'LATER' is not declared"]),
    ("# check=skip=JSONArgsRecommended,FromAsCasing\nFROM scratch as a\nCMD run\nMAINTAINER x\n",
     ["Dockerfile:4: MaintainerDeprecated: " + MAINTAINER]),
    ("# check=skip=all\nFROM scratch as a\nCMD run\nMAINTAINER x\n", []),
    # A stage FROM an image: its environment is unknown, so no variable is reported undefined.
    ("FROM alpine\nENV PATH=$GOPATH/bin:$PATH\n", []),
    # An ARG default is expanded before the ARG defines its name; a later stage FROM this one
    # inherits its variables.
    ("FROM scratch AS a\nARG V=$V\nENV W=1\nFROM a\nLABEL x=$V$W\n", [
        "Dockerfile:2: UndefinedVar: Usage of undefined variable '$V'"]),
    # The body of a heredoc is not a continuation.
    ("FROM scratch\nCOPY <<EOF /f\nx \\\n\nEOF\n", []),
    ("# check=experimental=all;skip=all\n# nothing\nFROM scratch AS a\n", [
        "Dockerfile:3: InvalidDefinitionDescription: Comment for FROM should follow the format: "
        "`# a <description>`"]),
    # A `# check=` comment above an instruction adds to the file's directive for it alone.
    ("# check=skip=MaintainerDeprecated\nFROM scratch\n# check=skip=JSONArgsRecommended\n"
     "CMD run\nMAINTAINER x\nCMD run\n", [
        "Dockerfile:4: MultipleInstructionsDisallowed: Multiple CMD instructions should not be "
        "used in the same stage because only the last one will be used",
        "Dockerfile:6: JSONArgsRecommended: " + CMD_SIGNALS]),
    # An empty comment line ends a description; a blank line does not (BuildKit's parser).
    ("# check=experimental=all\n# nothing\n#\nFROM scratch AS a\n# nothing\n\nARG A\n", [
        "Dockerfile:7: InvalidDefinitionDescription: Comment for ARG should follow the format: "
        "`# A <description>`"]),
])
def test_lint(text: str, expected: list[str]) -> None:
    assert [finding.render("Dockerfile") for finding in lint(parse(text))] == expected
