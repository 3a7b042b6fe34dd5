"""A corpus run for people (one line per case, then a count) and for tools (JSON)."""
from __future__ import annotations

import json
from pathlib import Path

from tests.conformance.runner import Result, Run


def line(result: Result, shown: int = 4, notes: bool = False) -> str:
    verdict = result.verdict
    if verdict.status == "PASS":
        return f"PASS {result.case.name}" + (f"  ({'; '.join(verdict.info)})" if notes and verdict.info else "")
    more = f" (+{len(verdict.differences) - shown} more)" if len(verdict.differences) > shown else ""
    return f"{verdict.status} {result.case.name}: " + " | ".join(verdict.differences[:shown]) + more


def summary(run: Run) -> str:
    passed = sum(result.verdict.passed for result in run.results)
    return f"{passed} passed, {len(run.results) - passed} failed ({run.seconds}s, Docker {run.docker_version})"


def as_json(run: Run, candidate: str) -> dict:
    return {"candidate": candidate, "docker_version": run.docker_version, "seconds": run.seconds,
            "probe_problem": run.probe_problem,
            "passed": sum(r.verdict.passed for r in run.results),
            "failed": [r.case.name for r in run.results if not r.verdict.passed],
            "cases": [_case(result) for result in run.results]}


def _case(result: Result) -> dict:
    entry = {"case": result.case.name, "expect": result.case.expect, "tags": list(result.case.tags),
             "status": result.verdict.status, "differences": list(result.verdict.differences),
             "info": list(result.verdict.info), "seconds": result.seconds}
    for side, outcome in (("docker", result.docker), ("candidate", result.candidate)):
        if outcome is not None:
            entry[side] = {"returncode": outcome.returncode, "seconds": outcome.seconds,
                           "problem": outcome.problem, "output": outcome.output[-1500:]}
            if outcome.image:
                entry[side]["config"] = outcome.image["config"]
                entry[side]["layers"] = outcome.image["layers"]
    if result.docker is not None:
        entry["docker"]["cached"] = result.cached
    return entry


def write(run: Run, candidate: str, path: Path) -> None:
    path.write_text(json.dumps(as_json(run, candidate), indent=1))
