"""Options more than one verb takes, defined once so every verb spells and checks them alike."""
from __future__ import annotations

import argparse
import os
import sys

EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 1, 2, 130, 143


def usage(message: str) -> int:
    """Bad command-line use: said on stderr; the exit status."""
    print(f"pybuild: {message}", file=sys.stderr)
    return EXIT_USAGE


def add_registry_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]",
                        help="speak plain http to this registry (repeatable; localhost and "
                             "127.0.0.1 always are)")
    parser.add_argument("--registry-timeout", type=_positive_seconds, metavar="SECONDS",
                        default=os.environ.get("PYBUILD_REGISTRY_TIMEOUT", "120"),
                        help="give up on a registry request after SECONDS, its retries "
                             "included; a read waits at most a quarter of it, 30 s at most "
                             "(default $PYBUILD_REGISTRY_TIMEOUT, else 120)")


def add_progress_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup,
                         what: str) -> None:
    """--progress and --trace, for the verbs whose work is a log of steps (`what`: build)."""
    parser.add_argument("--progress", choices=("auto", "tty", "plain", "quiet", "json"),
                        default="auto",
                        help=f"{what} log style on stderr (default auto: tty at a terminal unless "
                             "NO_COLOR or TERM=dumb, else plain); tty: a live view of the steps; "
                             "plain: BuildKit's plain lines; json: one JSON object per event "
                             "and line")
    parser.add_argument("--trace", metavar="FILE",
                        help=f"write the {what}'s timeline to FILE in Chrome's trace-event "
                             "format (open it in Perfetto or chrome://tracing), also when it "
                             "fails")


def _positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return seconds
