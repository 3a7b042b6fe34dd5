"""`pybuild`: the command line, shaped like `docker build`.

The build verb is builder/cli/build.py. Only argparse and dataclasses (for dataclass_code.py,
which must come before the first dataclass) are imported at start-up; the builder is imported when
a build actually runs, so `pybuild --version` and `--help` answer at once.
"""
from __future__ import annotations

import argparse
import os
import sys

from builder.cli import dataclass_code
from builder.cli.build import build_command
from builder.cli.options import EXIT_FAILURE, usage

# Options that mean the same to every verb taking them, each with a value: they may come before
# the verb too (`pybuild --cache-dir X load`), as `docker --config X build` takes them.
_GLOBAL_OPTIONS = frozenset({"--cache-dir", "--insecure-registry", "--registry-timeout"})
_VERBS = frozenset({"build", "parse", "du", "prune", "load", "images", "rmi", "push", "history",
                    "inspect", "sbom"})


def _verb_first(argv: list[str]) -> list[str]:
    """`--cache-dir X load -i a.tar` as `load --cache-dir X -i a.tar`; anything else as it is."""
    index = 0
    while index < len(argv) and argv[index].partition("=")[0] in _GLOBAL_OPTIONS:
        index += 1 if "=" in argv[index] else 2
    if 0 < index < len(argv) and argv[index] in _VERBS:
        return [argv[index], *argv[:index], *argv[index + 1:]]
    return argv


def main(argv: list[str] | None = None) -> int:
    dataclass_code.install()
    argv = _verb_first(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["parse"]:
        return _parse_command(argv[1:])
    if argv[:1] in (["du"], ["prune"]):
        from builder.cache import prune
        return {"du": prune.du_command, "prune": prune.prune_command}[argv[0]](argv[1:])
    if argv[:1] in (["load"], ["images"], ["rmi"], ["push"], ["history"], ["inspect"],
                    ["sbom"]):
        from builder.cli import images
        return {"load": images.load_command, "images": images.images_command,
                "rmi": images.rmi_command, "push": images.push_command,
                "history": images.history_command,
                "inspect": images.inspect_command,
                "sbom": images.sbom_command}[argv[0]](argv[1:])
    if argv[:1] == ["build"]:
        argv = argv[1:]
    return build_command(argv)


def _parse_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="pybuild parse",
                                     description="Print a Dockerfile's instructions as JSON.")
    parser.add_argument("-f", "--file", default="Dockerfile", metavar="FILE",
                        help="the Dockerfile (default ./Dockerfile; - reads stdin)")
    options = parser.parse_args(argv)
    from grammar.dump import to_data
    from grammar.errors import DockerfileError
    from grammar.parser import parse
    from layers.image import dumps
    try:
        if options.file == "-":
            text, name = sys.stdin.read(), "Dockerfile"
        else:
            with open(options.file, encoding="utf-8", errors="surrogateescape") as handle:
                text, name = handle.read(), os.path.basename(options.file)
    except OSError as error:
        return usage(f"cannot read {options.file}: {error.strerror}")
    try:
        dockerfile = parse(text, name)
    except DockerfileError as error:
        print(f"ERROR: {error.in_source(text, name).render()}", file=sys.stderr)
        return EXIT_FAILURE
    print(dumps(to_data(dockerfile), indent=2).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
