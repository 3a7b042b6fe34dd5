"""Coverage-guided fuzzing of the Dockerfile parser (atheris, libFuzzer's engine):

    python3 tests/fuzz/fuzz_parser.py [CORPUS_DIR...] [-max_total_time=SECONDS] [libFuzzer options]

The input's bytes are the Dockerfile's text (UTF-8, undecodable bytes kept as surrogates, as
pybuild reads a Dockerfile). `parse` may fail only with DockerfileError, whose rendering must not
fail either, and an instruction may only point at lines the file has. Anything else is a finding:
libFuzzer stops and writes the input to crash-<sha1> (`-artifact_prefix=DIR/` says where).
"""
from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from grammar import instructions as ins
    from grammar.errors import DockerfileError
    from grammar.parser import parse


def one_input(data: bytes) -> None:
    text = data.decode("utf-8", "surrogateescape")
    try:
        dockerfile = parse(text)
    except DockerfileError as error:
        str(error)
        return
    count = len(dockerfile.lines)
    for instruction in dockerfile.instructions:
        spans = [instruction.span]
        if isinstance(instruction, ins.Onbuild):
            spans.append(instruction.trigger.span)
        for span in spans:
            if not 1 <= span.line <= span.end_line <= count:
                raise AssertionError(f"span {span} outside the file's {count} lines")


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
