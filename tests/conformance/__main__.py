"""python3 -m tests.conformance: run the corpus (or some of it) against a candidate builder."""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from tests.conformance import report
from tests.conformance.cases import load_cases
from tests.conformance.reference import ROOT
from tests.conformance.runner import Options, run_corpus

PYBUILD = (f"{shlex.quote(sys.executable)} -m builder.cli -f {{dockerfile}} -t {{tag}} -o {{out}} "
           "{buildargs} {secrets} {network} {target} {context}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m tests.conformance",
        description="Build conformance cases with real Docker and with a candidate; compare.")
    parser.add_argument("--candidate", default=PYBUILD,
                        help="command template run with bash; placeholders {dockerfile} {context} "
                             "{tag} {out} {buildargs} {target} {target_name} {case} {network} "
                             "{secrets} {workdir} (default: this checkout's pybuild)")
    parser.add_argument("--cases", type=Path, default=ROOT / "testdata" / "conformance")
    parser.add_argument("-k", dest="select", help="only cases whose name matches this regex")
    parser.add_argument("--skip-tag", action="append", default=[], help="skip cases tagged so")
    parser.add_argument("--probe-base", help="image with a shell for the preflight probe "
                                             "(FROM it + RUN); without it, no probe")
    parser.add_argument("--strict-lines", action="store_true",
                        help="an error case's message must name the case's error_line")
    parser.add_argument("--ignore-path", action="append", default=[],
                        help="drop this path (glob) on both sides in every case")
    parser.add_argument("--refresh", action="store_true", help="rebuild Docker's side")
    parser.add_argument("--jobs", type=int, default=2, help="cases run at a time (default 2)")
    parser.add_argument("--timeout", type=int, default=300, help="per build, in seconds")
    parser.add_argument("--report", type=Path, help="write the JSON report here")
    parser.add_argument("-v", "--verbose", action="store_true", help="notes on PASS lines too")
    args = parser.parse_args(argv)
    os.umask(0o022)
    cases = load_cases(args.cases, args.select, tuple(args.skip_tag))
    options = Options(candidate=args.candidate, probe_base=args.probe_base,
                      strict_lines=args.strict_lines, cwd=os.getcwd(), refresh=args.refresh,
                      ignore_paths=tuple(p.strip("/") for p in args.ignore_path),
                      timeout=args.timeout, jobs=args.jobs)
    if options.probe_base:
        print(f"probe: FROM {options.probe_base} + RUN", flush=True)
    run = run_corpus(cases, options, lambda result: print(report.line(result, notes=args.verbose),
                                                          flush=True))
    if run.probe_problem:
        print(f"the probe failed: {run.probe_problem}", flush=True)
    if args.report:
        report.write(run, args.candidate, args.report)
    print(report.summary(run), flush=True)
    return 0 if run.results and all(r.verdict.passed for r in run.results) else 1


if __name__ == "__main__":
    sys.exit(main())
