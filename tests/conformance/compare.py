"""Docker's outcome against the candidate's: a verdict per case with every difference named.

Config values that Docker treats alike at run time are equal: null, [], {} and ""; WorkingDir
"" and "/"; Env is a map (its order is only noted). Files are compared entry by entry on every
recorded property; mtimes and owner names are not recorded."""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field

from tests.conformance.cases import Case
from tests.conformance.engine import CONFIG_FIELDS, INFRASTRUCTURE, INFO_FIELDS
from tests.conformance.outcome import Outcome

# bash's own words when the template's program could not be started at all
DID_NOT_RUN = re.compile(r"^bash: (line \d+: )?[^:\n]+: (command not found|No such file or "
                         r"directory|Permission denied)$", re.MULTILINE)


@dataclass(frozen=True)
class Verdict:
    status: str  # PASS, FAIL, or DIFFERS: exactly the deliberate differences the case declares
    differences: tuple[str, ...] = ()
    info: tuple[str, ...] = field(default=())

    @property
    def passed(self) -> bool:
        return self.status in ("PASS", "DIFFERS")


def judge(case: Case, docker: Outcome, candidate: Outcome, probe_problem: str | None = None,
          strict_lines: bool = False, ignore_paths: tuple[str, ...] = (),
          expected: tuple[str, ...] = ()) -> Verdict:
    """The verdict, then held against the differences declared for the case (`expected` and
    the case's own `differs`)."""
    verdict = _judge(case, docker, candidate, probe_problem, strict_lines, ignore_paths)
    return _against_expected(verdict, expected + case.differs)


def _judge(case: Case, docker: Outcome, candidate: Outcome, probe_problem: str | None,
           strict_lines: bool, ignore_paths: tuple[str, ...]) -> Verdict:
    if case.expect == "ok" and docker.returncode != 0:
        return Verdict("FAIL", (f"CORPUS: docker fails this ok case: {docker.last_error()}",))
    if case.expect == "error" and docker.returncode == 0:
        return Verdict("FAIL", ("CORPUS: docker builds this error case",))
    if case.expect == "error":
        return _judge_error(case, docker, candidate, probe_problem, strict_lines)
    if candidate.returncode != 0:
        return Verdict("FAIL", (f"candidate build failed rc={candidate.returncode}: "
                                f"{candidate.last_error()}",))
    if candidate.problem:
        return Verdict("FAIL", (candidate.problem,))
    differences, info = compare_images(docker.image, candidate.image, ignore_paths + case.ignore_paths)
    return Verdict("FAIL" if differences else "PASS", tuple(differences), tuple(info))


def _judge_error(case: Case, docker: Outcome, candidate: Outcome, probe_problem: str | None,
                 strict_lines: bool) -> Verdict:
    if candidate.returncode == 124 or INFRASTRUCTURE.search(candidate.output) \
            or DID_NOT_RUN.search(candidate.output):
        return Verdict("FAIL", (f"candidate did not run properly (rc={candidate.returncode}): "
                                f"{candidate.last_error()}",))
    if probe_problem:
        return Verdict("FAIL", (f"candidate failed the preflight probe build ({probe_problem}), "
                                "so its failure here proves nothing",))
    if candidate.returncode == 0:
        return Verdict("FAIL", (f"candidate succeeded but docker fails this case "
                                f"(docker: {docker.last_error()})",))
    info = ()
    if case.error_line is not None:
        named = candidate.names_line(case.error_line)
        info = (f"line {case.error_line} named: docker={docker.names_line(case.error_line)} "
                f"candidate={named}",)
        if strict_lines and not named:
            return Verdict("FAIL", (f"candidate's error does not name Dockerfile line "
                                    f"{case.error_line}: {candidate.last_error()}",), info)
    return Verdict("PASS", (), info)


def _against_expected(verdict: Verdict, expected: tuple[str, ...]) -> Verdict:
    if not expected:
        return verdict
    if verdict.status == "PASS":
        return Verdict("FAIL", tuple(f"declared difference not seen (the case now matches "
                                     f"Docker?): {e}" for e in expected), verdict.info)
    unexplained = [d for d in verdict.differences if not any(e in d for e in expected)]
    unseen = [e for e in expected if not any(e in d for d in verdict.differences)]
    if unexplained or unseen:
        return Verdict("FAIL", tuple(unexplained) + tuple(f"declared difference not seen: {e}"
                                                          for e in unseen), verdict.info)
    return Verdict("DIFFERS", verdict.differences, verdict.info)


def _normal(key: str, value):
    if value in (None, [], {}, "") or (key == "WorkingDir" and value == "/"):
        return None
    if key == "Env":
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in value)
    return value


def compare_images(docker: dict, candidate: dict,
                   ignore_paths: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    """(differences, notes that do not count) between two engine.capture() results."""
    differences, info = [], []
    for key in CONFIG_FIELDS:
        a, b = docker["config"].get(key), candidate["config"].get(key)
        if _normal(key, a) == _normal(key, b):
            if a != b:
                info.append(f"config.{key} docker={a!r} candidate={b!r} (equal at run time)")
        elif key == "Env":
            a, b = _normal(key, a) or {}, _normal(key, b) or {}
            differences.append("config.Env: " + "; ".join(
                f"{name} docker={a.get(name, '<unset>')!r} candidate={b.get(name, '<unset>')!r}"
                for name in sorted(set(a) | set(b)) if a.get(name, "<unset>") != b.get(name, "<unset>")))
        else:
            differences.append(f"config.{key}: docker={a!r} candidate={b!r}")
    for key in INFO_FIELDS:
        if docker["info"].get(key) != candidate["info"].get(key):
            info.append(f"config.{key} docker={docker['info'].get(key)!r} "
                        f"candidate={candidate['info'].get(key)!r} (not counted)")
    if docker["layers"] != candidate["layers"]:
        info.append(f"layers docker={docker['layers']} candidate={candidate['layers']} (not counted)")
    ours, theirs = _kept(docker["fs"], ignore_paths), _kept(candidate["fs"], ignore_paths)
    for path in sorted(set(ours) | set(theirs)):
        a, b = ours.get(path), theirs.get(path)
        if a == b:
            continue
        if b is None:
            differences.append(f"/{path}: missing in candidate ({a['type']})")
        elif a is None:
            differences.append(f"/{path}: extra in candidate ({b['type']})")
        else:
            differences.append(f"/{path}: " + ", ".join(
                "content differs" if key == "sha256" else f"{key} docker={a.get(key)!r} candidate={b.get(key)!r}"
                for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)))
    return differences, info


def _kept(files: dict[str, dict], ignore_paths: tuple[str, ...]) -> dict[str, dict]:
    if not ignore_paths:
        return files
    return {path: entry for path, entry in files.items()
            if not any(path == p or path.startswith(p + "/") or fnmatch.fnmatch(path, p)
                       for p in ignore_paths)}
